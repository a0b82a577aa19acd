"""Refinement that loses nothing silently (issue 18, items 2-4), without Ray: a damaged tar counts
every sample it lost, a shard that cannot be read is neither published nor recorded done, and a
sample without its annotation is skipped and counted, not published without a label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simgan_dist.data.reader import load_arrays
from simgan_dist.io.shardio import write_shard
from simgan_dist.refine import ledger
from simgan_dist.refine.shard import RefineSettings, ShardRefiner

NUM_SAMPLES = 40


def _refiner(checkpoint: Path) -> ShardRefiner:
    from simgan_dist.train.checkpoint import load_refiner

    refiner, cfg, _ = load_refiner(checkpoint)
    settings = RefineSettings(batch_size=16, channels_last=False)
    return ShardRefiner(refiner.state_dict(), cfg.model, settings, {"checkpoint_id": "c"})


def _shard(path: Path, with_json: bool = True) -> Path:
    rng = np.random.default_rng(0)
    samples = [
        (f"s{i:03d}", rng.integers(0, 255, (28, 28), dtype=np.uint8),
         {"label": i % 10} if with_json or i % 4 else None)
        for i in range(NUM_SAMPLES)
    ]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    write_shard(path, samples)
    return path


def test_a_damaged_tar_counts_every_sample_it_lost(checkpoint, tmp_path) -> None:
    source = _shard(tmp_path / "in" / "synth-000000.tar")
    data = source.read_bytes()
    source.write_bytes(data[: len(data) // 2 + 100])  # cut in the middle of a member
    out = tmp_path / "out"
    out.mkdir()
    result = _refiner(checkpoint).refine_shard(str(source), str(out), NUM_SAMPLES)
    assert result.damaged.startswith("damaged: ") and "ReadError" in result.damaged
    assert 0 < result.num_samples < NUM_SAMPLES
    assert result.num_lost == NUM_SAMPLES - result.num_samples
    assert result.num_skipped == result.num_lost  # every lost sample, not one for the shard
    # What came before the damage is published and recorded: reading it again gives the same.
    assert "synth-000000.tar" in ledger.read_done(str(out))
    assert len(load_arrays(str(out / "synth-000000.tar"))[1]) == result.num_samples

    unknown = _refiner(checkpoint).refine_shard(str(source), str(tmp_path / "out2"))
    assert unknown.damaged and unknown.num_lost is None  # no manifest count: not guessed


def test_a_tar_cut_at_a_member_boundary_is_caught_by_the_manifest_count(
    checkpoint, tmp_path
) -> None:
    source = _shard(tmp_path / "in" / "synth-000000.tar")
    data = source.read_bytes()
    source.write_bytes(data[: len(data) // 2])  # 512-byte aligned: reads as a shorter whole tar
    out = tmp_path / "out"
    out.mkdir()
    result = _refiner(checkpoint).refine_shard(str(source), str(out), NUM_SAMPLES)
    assert f"of the {NUM_SAMPLES} samples its manifest lists" in result.damaged
    assert result.num_lost == NUM_SAMPLES - result.num_samples > 0


def test_an_unreadable_shard_is_not_recorded_done(checkpoint, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    missing = tmp_path / "in" / "synth-000001.tar"  # listed, but gone (deleted mid-run)
    result = _refiner(checkpoint).refine_shard(str(missing), str(out), NUM_SAMPLES)
    assert result.failed.startswith("unreadable: ") and "FileNotFoundError" in result.failed
    assert result.shard is None and ledger.read_done(str(out)) == {}
    assert not list(out.glob("*.tar"))
    # Restored: the same call refines it in full.
    _shard(missing)
    again = _refiner(checkpoint).refine_shard(str(missing), str(out), NUM_SAMPLES)
    assert not again.failed and again.num_samples == NUM_SAMPLES


def test_a_sample_without_json_is_skipped_and_counted(checkpoint, tmp_path) -> None:
    source = _shard(tmp_path / "in" / "synth-000000.tar", with_json=False)
    out = tmp_path / "out"
    out.mkdir()
    result = _refiner(checkpoint).refine_shard(str(source), str(out), NUM_SAMPLES)
    assert result.num_skipped == NUM_SAMPLES // 4 and result.num_samples == 3 * NUM_SAMPLES // 4
    assert all("no json annotation" in s for s in result.skipped)
    _, metas = load_arrays(str(out / "synth-000000.tar"))
    assert all("label" in m for m in metas)


def test_stop_policy_still_stops_on_damage(checkpoint, tmp_path) -> None:
    from simgan_dist.data.reader import BadSampleError
    from simgan_dist.train.checkpoint import load_refiner

    source = _shard(tmp_path / "in" / "synth-000000.tar")
    source.write_bytes(source.read_bytes()[:3000])
    refiner, cfg, _ = load_refiner(checkpoint)
    settings = RefineSettings(batch_size=16, channels_last=False, on_bad_sample="stop")
    shard = ShardRefiner(refiner.state_dict(), cfg.model, settings, {"checkpoint_id": "c"})
    (tmp_path / "out").mkdir()
    with pytest.raises(BadSampleError, match="damaged tar"):
        shard.refine_shard(str(source), str(tmp_path / "out"), NUM_SAMPLES)
