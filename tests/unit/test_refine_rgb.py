"""Colour refiners without Ray: a 3-channel R refines RGB shards, exports to safetensors and ONNX
that onnxruntime agrees with, and a refiner meets shards of another channel count in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from simgan_dist.cli import main
from simgan_dist.data.reader import load_arrays
from simgan_dist.io.shardio import write_shards
from simgan_dist.model.exported import read_exported
from simgan_dist.model.onnx_refiner import ONNX_TOLERANCE, run_onnx
from simgan_dist.refine.export import export_refiner
from simgan_dist.refine.ray_pool import refine_shards
from simgan_dist.refine.shard import RefineSettings, ShardRefiner
from simgan_dist.refine.source import open_refiner


def _shards(root: Path, name: str, channels: int, num: int = 12) -> Path:
    rng = np.random.default_rng(channels)
    shape = (28, 28) if channels == 1 else (28, 28, channels)
    samples = [
        (f"k{i:03d}", rng.integers(0, 256, shape, dtype=np.uint8), {"label": i % 10})
        for i in range(num)
    ]
    write_shards(samples, root / name, name, samples_per_shard=6)
    return root / name


@pytest.fixture
def rgb_checkpoint(tmp_path: Path) -> Path:
    """A debug-preset checkpoint of a 3-channel refiner (rank 0 of 1)."""
    from simgan_dist.config import load_config
    from simgan_dist.train.session import save_initial_checkpoint

    cfg = load_config(preset="debug", overrides=["run.num_workers=1", "model.image_channels=3"])
    return save_initial_checkpoint(cfg, tmp_path / "rgb-run" / "checkpoint-000000000096")


def test_a_colour_refiner_refines_colour_shards(rgb_checkpoint, tmp_path) -> None:
    source = open_refiner(rgb_checkpoint)
    rgb = _shards(tmp_path, "rgb", 3)
    settings = RefineSettings(batch_size=5, channels_last=False)
    refiner = ShardRefiner(source.refiner.state_dict(), source.model, settings, source.lineage)
    result = refiner.refine_shard(str(rgb / "rgb-000000.tar"), str(tmp_path / "out"))
    assert result.num_samples == 6 and result.num_skipped == 0
    images, metas = load_arrays(str(tmp_path / "out" / "rgb-000000.tar"))
    inputs, _ = load_arrays(str(rgb / "rgb-000000.tar"))
    assert images.shape == (6, 28, 28, 3) and images.dtype == np.uint8
    assert [m["__key__"] for m in metas] == [f"k{i:03d}" for i in range(6)]
    assert not np.array_equal(images, inputs)  # R changed the colour images


@pytest.mark.parametrize("source", ["checkpoint", "export"])
def test_refine_stops_in_one_line_on_another_channel_count(
    source, checkpoint, rgb_checkpoint, tmp_path, capsys
) -> None:
    """A grey refiner on colour shards, a colour one on grey shards: refused before Ray starts,
    naming both counts, the input and the first key; from a checkpoint or an export."""
    rgb, grey = _shards(tmp_path, "rgb", 3), _shards(tmp_path, "grey", 1)
    grey_r, rgb_r = checkpoint, rgb_checkpoint
    if source == "export":
        grey_r, rgb_r = tmp_path / "grey-export", tmp_path / "rgb-export"
        export_refiner(checkpoint, grey_r, onnx=False)
        export_refiner(rgb_checkpoint, rgb_r, onnx=False)
    with pytest.raises(ValueError) as err:
        refine_shards(grey_r, str(rgb), tmp_path / "out", progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert f"expects 1-channel images, {rgb} holds 3-channel ones (key k000 in rgb-000000.tar)" in (
        message
    )
    with pytest.raises(SystemExit):
        main(["refine", "--checkpoint", str(rgb_r), "--input", str(grey),
              "--output", str(tmp_path / "out"), "--no-progress"])  # fmt: skip
    printed = capsys.readouterr().err.strip()
    assert printed.startswith("simgan refine: refiner ") and "\n" not in printed
    assert f"expects 3-channel images, {grey} holds 1-channel ones (key k000" in printed
    assert not (tmp_path / "out").exists()  # nothing was written


@pytest.mark.slow  # out of the quick tier
def test_a_colour_refiner_exports_to_safetensors_and_onnx(rgb_checkpoint, tmp_path) -> None:
    out = tmp_path / "export"
    info = export_refiner(rgb_checkpoint, out)
    assert info["model"]["image_channels"] == 3 and info["onnx"]["inputs"] == ["images"]
    assert info["onnx"]["check"]["max_abs_diff"] <= ONNX_TOLERANCE
    loaded = read_exported(out)
    images = torch.rand((3, 3, 28, 28), generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        expected = loaded.refiner(images).numpy()
    got = run_onnx(out / "refiner.onnx", {"images": images.numpy()})
    assert got.shape == (3, 3, 28, 28)
    np.testing.assert_allclose(got, expected, atol=ONNX_TOLERANCE)
