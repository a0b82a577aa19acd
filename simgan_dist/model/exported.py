"""The exported refiner format: safetensors weights + a JSON architecture, read with torch alone.

An export directory holds `refiner.safetensors` (R's state_dict, nothing else), `refiner.json`
(what rebuilds R: the model config fields, the pixel convention, the format version, where the
weights came from) and, optionally, `refiner.onnx` (onnx_refiner.py). Reading it needs torch,
safetensors and json: no Ray, no DeepSpeed, no checkpoint. The JSON records the weights' sha256,
so a file changed or cut short after the export is refused, never half loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import Tensor

from simgan_dist.config import ModelConfig, build_dataclass
from simgan_dist.errors import InputError
from simgan_dist.model.networks import Refiner, build_refiner

FORMAT_NAME = "simgan-dist-refiner"
FORMAT_VERSION = 1
ARCH_FILE = "refiner.json"
WEIGHTS_FILE = "refiner.safetensors"
ONNX_FILE = "refiner.onnx"
# The model section's fields that shape R; the discriminator's layout is not part of R.
REFINER_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name != "discriminator")
PIXELS = {
    "layout": "float32 (batch, channels, height, width)",
    "range": [-1.0, 1.0],
    "from_uint8": "(v + 0.5) / 128 - 1 for an 8-bit level v (each level's interval centre)",
    "to_uint8": "floor((x + 1) * 128) clipped to 0..255",
}


class ExportError(InputError):
    """An export that cannot be read or written; the message names the file."""


@dataclass(frozen=True)
class ExportedRefiner:
    """A refiner read back from an export directory (eval mode) and what its JSON says."""

    refiner: Refiner
    model: ModelConfig
    info: dict[str, Any]  # the JSON as written
    arch_file: Path  # that JSON (refiner.json in its export directory)


def refiner_model_fields(model: ModelConfig) -> dict[str, Any]:
    """The model config fields that rebuild R: ModelConfig(**these) and build_refiner."""
    return {name: getattr(model, name) for name in REFINER_FIELDS}


def architecture_file(location: str | Path) -> Path | None:
    """The JSON of the export that location names (a directory holding refiner.json, or a .json
    file itself), or None when location is not an export (a run or checkpoint directory)."""
    path = Path(location)
    if path.suffix == ".json":
        return path
    return path / ARCH_FILE if (path / ARCH_FILE).is_file() else None


def write_weights(refiner: Refiner, directory: Path) -> dict[str, str]:
    """R's state_dict as refiner.safetensors; returns the JSON's `weights` entry (file, sha256)."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in refiner.state_dict().items()}
    data = safetensors.torch.save(tensors, metadata={"format": FORMAT_NAME})
    _write_atomically(directory / WEIGHTS_FILE, data)
    return {"file": WEIGHTS_FILE, "sha256": hashlib.sha256(data).hexdigest()}


def write_architecture(
    directory: Path,
    model: ModelConfig,
    weights: dict[str, str],
    source: dict[str, Any],
    onnx: dict[str, Any] | None,
) -> dict[str, Any]:
    """refiner.json, written last (atomically): a complete JSON means a complete export."""
    info = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model": refiner_model_fields(model),
        "pixels": PIXELS,
        "inputs": {
            "images": "float32 (batch, image_channels, image_height, image_width) in [-1, 1]",
            **(
                {"noise": "float32 (batch, refiner_noise_channels) N(0, 1) values per image"}
                if model.refiner_noise_channels
                else {}
            ),
        },
        "weights": weights,
        "onnx": onnx,
        "source": source,
    }
    _write_atomically(directory / ARCH_FILE, (json.dumps(info, indent=1) + "\n").encode())
    return info


def read_exported(location: str | Path, device: str = "cpu") -> ExportedRefiner:
    """R from an export directory (or its JSON), in eval mode on device. Raises ExportError
    naming the file when one is missing, corrupt or does not match the JSON."""
    arch_path = architecture_file(location) or Path(location) / ARCH_FILE
    info = _read_json(arch_path)
    if not isinstance(info.get("model"), dict):
        raise ExportError(f"{arch_path}: model: must be a mapping of model config fields")
    try:
        model = build_dataclass(ModelConfig, info["model"], "model.")
    except (ValueError, TypeError) as err:
        raise ExportError(f"{arch_path}: {err}") from None
    weights_path, tensors = _read_weights(arch_path, info.get("weights"))
    mismatch = _shape_mismatch(model, tensors)
    if mismatch:  # before R is built: a JSON that says 200000 features would allocate TBs
        raise ExportError(f"{weights_path}: does not fit the model in {arch_path.name}: {mismatch}")
    refiner = build_refiner(model)
    refiner.load_state_dict(tensors)
    return ExportedRefiner(refiner.to(device).eval(), model, info, arch_path)


def _shape_mismatch(model: ModelConfig, tensors: dict[str, Tensor]) -> str:
    """How the saved tensors differ from R's parameters for model ('' when they fit). R is
    built on the meta device: shapes without memory, whatever the JSON's sizes."""
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in build_refiner(model).state_dict().items()}
    saved = {name: tuple(t.shape) for name, t in tensors.items()}
    problems = [f"missing {name}" for name in expected if name not in saved]
    problems += [f"unexpected {name}" for name in saved if name not in expected]
    problems += [
        f"{name}: saved {list(saved[name])}, the model has {list(shape)}"
        for name, shape in expected.items()
        if name in saved and saved[name] != shape
    ]
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


def _read_weights(arch_path: Path, weights: Any) -> tuple[Path, dict[str, Tensor]]:
    """The tensors of the file the JSON's `weights` entry names, checked against its sha256."""
    weights = weights if isinstance(weights, dict) else {}
    name = weights.get("file")
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise ExportError(f"{arch_path}: weights.file: must name a file beside it, got {name!r}")
    path = arch_path.parent / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ExportError(f"{path}: missing (the export is incomplete)") from None
    if hashlib.sha256(data).hexdigest() != weights.get("sha256"):
        raise ExportError(
            f"{path}: its sha256 does not match the one in {arch_path.name} "
            "(changed, truncated or corrupt after the export)"
        )
    try:
        return path, safetensors.torch.load(data)
    except (SafetensorError, ValueError) as err:
        raise ExportError(f"{path}: unreadable: {err}") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{path}: missing (not a refiner export)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ExportError(f"{path}: not valid JSON (truncated or corrupt?): {err}") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
        raise ExportError(f"{path}: not a {FORMAT_NAME} file (no 'format': '{FORMAT_NAME}')")
    if info.get("format_version") != FORMAT_VERSION:
        raise ExportError(
            f"{path}: format_version {info.get('format_version')!r}, this version reads "
            f"{FORMAT_VERSION}"
        )
    return info


def _write_atomically(path: Path, data: bytes) -> None:
    # A reader never sees half a file: write beside it, then rename over it.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)
