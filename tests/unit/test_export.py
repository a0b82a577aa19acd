"""`simgan export` without Ray: the safetensors + JSON round trip, the ONNX graph against PyTorch
(noise input included), each broken file named, the missing extra in one line."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from simgan_dist.cli import main
from simgan_dist.config import ModelConfig
from simgan_dist.model.exported import (
    ARCH_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
    ExportError,
    read_exported,
    refiner_model_fields,
)
from simgan_dist.model.networks import Refiner, build_refiner
from simgan_dist.model.onnx_refiner import ONNX_TOLERANCE, check_onnx, run_onnx, write_onnx
from simgan_dist.refine.export import export_refiner
from simgan_dist.refine.source import lineage_of, open_refiner
from simgan_dist.train.checkpoint import NETWORKS_FILE, load_refiner, read_state

SHAPE = (1, 28, 28)
PLAIN = ModelConfig(refiner_features=8, refiner_blocks=1)
PIXEL_NOISE = dataclasses.replace(PLAIN, refiner_noise_channels=3)


def _images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _moving_refiner(model: ModelConfig, seed: int = 0) -> Refiner:
    """A fresh R whose noise projection (if any) visibly changes the image."""
    torch.manual_seed(seed)
    refiner = build_refiner(model).eval()
    if refiner.noise_maps is not None:
        for p in refiner.noise_maps.parameters():
            torch.nn.init.normal_(p, std=0.3)
    return refiner


def _per_image_noise(refiner: Refiner, n: int, seed: int) -> torch.Tensor | None:
    if not refiner.noise_channels:
        return None
    return torch.randn((n, refiner.noise_channels), generator=torch.Generator().manual_seed(seed))


def _torch_output(refiner: Refiner, images: torch.Tensor, noise: torch.Tensor | None):
    expanded = None if noise is None else noise[:, :, None, None].expand(-1, -1, *SHAPE[1:])
    with torch.no_grad():
        return refiner(images, noise=expanded).numpy()


def test_an_export_reads_back_as_the_checkpoints_refiner(noisy_checkpoint, tmp_path) -> None:
    run = noisy_checkpoint.parent
    info = export_refiner(run, tmp_path / "export", onnx=False)
    refiner, cfg, directory = load_refiner(run)
    assert directory == noisy_checkpoint
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [ARCH_FILE, WEIGHTS_FILE]
    source = info["source"]
    assert source["checkpoint_id"] == directory.name and source["location"] == str(run)
    assert source["cur_nimg"] == read_state(directory)["loop"]["cur_nimg"]
    assert source["lineage"] == lineage_of(cfg, directory, directory / NETWORKS_FILE)
    assert info["onnx"] is None and "noise" in info["inputs"]
    for location in (tmp_path / "export", tmp_path / "export" / ARCH_FILE):
        loaded = read_exported(location)
        assert refiner_model_fields(loaded.model) == refiner_model_fields(cfg.model)
        assert loaded.refiner.state_dict().keys() == refiner.state_dict().keys()
        for name, tensor in refiner.state_dict().items():
            assert torch.equal(loaded.refiner.state_dict()[name], tensor), name
        x = _images(4)
        noise = refiner.noise_like(x, torch.Generator().manual_seed(5))
        other = refiner.noise_like(x, torch.Generator().manual_seed(6))
        moved = (refiner(x, noise=noise) - refiner(x, noise=other)).abs().mean()
        assert moved > 0.01  # the noise really changes the images
        assert torch.equal(loaded.refiner(x, noise=noise), refiner(x, noise=noise))
    # `refine` opens the export with its source checkpoint's lineage.
    from_export, from_run = open_refiner(tmp_path / "export"), open_refiner(run)
    assert from_export.lineage == from_run.lineage and from_export.model == from_run.model
    # docs/refine.md's plain-PyTorch route: the JSON's model fields rebuild R by name.
    rebuilt = Refiner.from_fields(
        json.loads((tmp_path / "export" / ARCH_FILE).read_text())["model"]
    )
    assert rebuilt.state_dict().keys() == refiner.state_dict().keys()


@pytest.mark.slow  # out of the quick tier
@pytest.mark.parametrize(
    "model",
    [PLAIN, PIXEL_NOISE],
    ids=["paper", "pixel-noise"],
)
def test_onnx_graph_matches_pytorch_at_any_batch_size(model, tmp_path) -> None:
    refiner = _moving_refiner(model)
    path = tmp_path / ONNX_FILE
    write_onnx(refiner, path, SHAPE)
    entry = check_onnx(path, refiner, SHAPE)
    assert entry["check"]["max_abs_diff"] <= ONNX_TOLERANCE
    assert entry["inputs"] == (["images", "noise"] if model.refiner_noise_channels else ["images"])
    for batch in (1, 5):  # the example batch was 2: the axis is dynamic
        images, noise = _images(batch, seed=batch), _per_image_noise(refiner, batch, seed=batch)
        inputs = {"images": images.numpy()} | ({} if noise is None else {"noise": noise.numpy()})
        got = run_onnx(path, inputs)
        np.testing.assert_allclose(got, _torch_output(refiner, images, noise), atol=ONNX_TOLERANCE)
        assert np.abs(got - images.numpy()).max() > 0.01  # R changes the images (a real check)
        if noise is not None:  # the noise is an input of the graph, not a constant
            other = run_onnx(path, {**inputs, "noise": (noise + 1).numpy()})
            assert np.abs(other - got).max() > 0.01


@pytest.mark.slow  # out of the quick tier
def test_the_onnx_check_fails_on_a_graph_that_computes_something_else(tmp_path) -> None:
    path = tmp_path / ONNX_FILE
    write_onnx(_moving_refiner(PLAIN, seed=0), path, SHAPE)
    with pytest.raises(ExportError, match=r"refiner\.onnx: onnxruntime differs from PyTorch"):
        check_onnx(path, _moving_refiner(PLAIN, seed=1), SHAPE)


@pytest.mark.slow  # out of the quick tier
def test_export_command_prints_the_check_and_no_onnx_leaves_none(checkpoint, tmp_path, capsys):
    out = tmp_path / "export"
    main(["export", str(checkpoint.parent), "--out", str(out)])
    printed = capsys.readouterr().out
    info = json.loads((out / ARCH_FILE).read_text())
    diff = float(re.search(r"max abs diff (\S+) \(tolerance", printed).group(1))
    assert diff == pytest.approx(info["onnx"]["check"]["max_abs_diff"], rel=1e-2)
    assert diff <= ONNX_TOLERANCE and f"{checkpoint.name} (" in printed
    main(["export", str(checkpoint), "--out", str(out), "--no-onnx"])
    assert not (out / ONNX_FILE).exists()  # the earlier graph is not left to disagree
    assert json.loads((out / ARCH_FILE).read_text())["onnx"] is None
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path / "no-run"), "--out", str(tmp_path / "x"), "--no-onnx"])
    assert exit_info.value.code == 1
    assert "no complete checkpoint" in capsys.readouterr().err


def _break(export: Path, case: str) -> str:
    """Damage one file of an export; returns what the error must say."""
    arch, weights = export / ARCH_FILE, export / WEIGHTS_FILE
    info = json.loads(arch.read_text())
    if case == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:100])
        return f"{weights}: its sha256 does not match"
    if case == "missing weights":
        weights.unlink()
        return f"{weights}: missing"
    if case == "missing json":
        arch.unlink()
        return f"{arch}: missing"
    if case == "truncated json":
        arch.write_text(arch.read_text()[:50])
        return f"{arch}: not valid JSON"
    if case == "bad field":
        info["model"]["refiner_kernel"] = 2
        arch.write_text(json.dumps(info))
        return f"{arch}: model.refiner_kernel: must be a positive odd number"
    if case == "other architecture":
        info["model"]["refiner_features"] *= 2
        arch.write_text(json.dumps(info))
        return f"{weights}: does not fit the model in refiner.json"
    assert case == "newer format"
    info["format_version"] = 99
    arch.write_text(json.dumps(info))
    return f"{arch}: format_version 99"


CASES = ["truncated weights", "missing weights", "missing json", "truncated json", "bad field",
         "other architecture", "newer format"]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_a_broken_export_is_refused_in_one_line_naming_the_file(
    case, checkpoint, digit_shards, tmp_path, capsys
) -> None:
    export = tmp_path / "export"
    export_refiner(checkpoint, export, onnx=False)
    message = _break(export, case)
    with pytest.raises(ExportError, match=re.escape(message)):
        read_exported(export)
    # `simgan refine` opens the refiner before it starts Ray or writes anything.
    refined = tmp_path / "refined"
    with pytest.raises(SystemExit) as exit_info:
        main(["refine", "--checkpoint", str(export / ARCH_FILE), "--input", str(digit_shards["synthetic"]),
              "--output", str(refined)])  # fmt: skip
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and message in err and len(err.strip().splitlines()) == 1
    assert not refined.exists()


@pytest.mark.slow  # out of the quick tier
def test_onnx_without_the_extra_stops_in_one_line_naming_it(checkpoint, tmp_path) -> None:
    # onnxruntime made unimportable in a real `simgan export` process, as when not installed.
    code = (
        "import sys; sys.modules['onnxruntime'] = None; from simgan_dist.cli import main; "
        f"main(['export', {str(checkpoint)!r}, '--out', {str(tmp_path / 'export')!r}])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "onnxruntime" in done.stderr and "simgan-dist[export]" in done.stderr
    assert "--no-onnx" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "export").exists()  # stopped before any work
