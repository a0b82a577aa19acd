"""`simgan export`: a trained refiner as safetensors + JSON, and as ONNX checked against PyTorch.

The refiner is picked as `simgan refine` picks it (train/checkpoint.load_refiner): a checkpoint
directory itself, or a run's newest checkpoint that loads (an older one when the newest is
corrupt). Its weights are R's live state_dict (`networks.pt`'s `refiner` part): training keeps
no averaged (EMA) copy. The files are written beside each other, refiner.json last, so an export
cut short has no JSON and is never read as whole (model/exported.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simgan_dist.errors import InputError
from simgan_dist.io import urls
from simgan_dist.model.exported import (
    ARCH_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
    ExportError,
    write_architecture,
    write_weights,
)
from simgan_dist.model.onnx_refiner import check_onnx, require_onnx_packages, write_onnx
from simgan_dist.refine.source import lineage_of
from simgan_dist.train.checkpoint import NETWORKS_FILE, load_refiner, read_state


def export_refiner(
    location: str | Path,
    out: str | Path,
    *,
    onnx: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write out/refiner.safetensors, out/refiner.json and (onnx=True) out/refiner.onnx, the
    last checked with onnxruntime against PyTorch; returns refiner.json's content. location: a
    run or checkpoint directory, or the same on a store (storage_options as for refine)."""
    if onnx:
        require_onnx_packages()  # before any work: the one line names the extra
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory")
    refiner, cfg, directory = load_refiner(location, storage_options=storage_options)
    source = {
        "location": urls.absolute(str(location)),
        "checkpoint_id": directory.name,
        "cur_nimg": read_state(directory)["loop"]["cur_nimg"],
        "weights": "refiner",  # networks.pt's part; there is no EMA copy
        "lineage": lineage_of(cfg, directory, directory / NETWORKS_FILE),
    }
    out.mkdir(parents=True, exist_ok=True)
    # A JSON from an earlier export must not vouch for files this one is replacing.
    (out / ARCH_FILE).unlink(missing_ok=True)
    weights = write_weights(refiner, out)
    onnx_info = None
    if onnx:
        image_shape = (cfg.model.image_channels, cfg.model.image_height, cfg.model.image_width)
        write_onnx(refiner, out / ONNX_FILE, image_shape)
        try:
            onnx_info = check_onnx(out / ONNX_FILE, refiner, image_shape)
        except ExportError:
            (out / ONNX_FILE).unlink()  # a graph that computes something else is not kept
            raise
    else:
        (out / ONNX_FILE).unlink(missing_ok=True)  # an earlier export's, of other weights
    return write_architecture(out, cfg.model, weights, source, onnx_info)


def format_export(info: dict[str, Any], out: str | Path) -> str:
    """The lines `simgan export` prints: what was written, from where, and the ONNX check."""
    source, out = info["source"], Path(out)
    files = [WEIGHTS_FILE, ARCH_FILE] + ([ONNX_FILE] if info["onnx"] else [])
    lines = [
        f"[export] {source['checkpoint_id']} ({source['cur_nimg']} images, weights: "
        f"{source['weights']}) from {source['location']}",
        f"[export] wrote {', '.join(str(out / name) for name in files)}",
    ]
    if info["onnx"]:
        check = info["onnx"]["check"]
        lines.append(
            f"[export] onnx opset {info['onnx']['opset']}, inputs {', '.join(info['onnx']['inputs'])}:"
            f" onnxruntime vs PyTorch on a seeded batch of {check['batch']}: max abs diff "
            f"{check['max_abs_diff']:.3g} (tolerance {check['tolerance']:g})"
        )
    return "\n".join(lines)
