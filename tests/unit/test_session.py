"""The training session: one Ray-free place that builds a run and restores it from a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from simgan_dist.cli import main
from simgan_dist.config import load_config
from simgan_dist.data.catalog import CATALOG_FILE
from simgan_dist.train.checkpoint import rank_file
from simgan_dist.train.run_outputs import key_log_name
from simgan_dist.train.session import TrainingSession


def _config(digit_shards: dict[str, Path], adversarial_nimg: int):
    return load_config(
        preset="debug",
        overrides=[
            "run.num_workers=1",
            f"data.synthetic={digit_shards['synthetic']}",
            f"data.real={digit_shards['real']}",
            f"schedule.adversarial_nimg={adversarial_nimg}",
            "data.record_keys=true",
        ],
    )


def test_a_session_rebuilt_from_its_checkpoint_continues_bit_for_bit(
    digit_shards, tmp_path: Path
) -> None:
    """Shard streams dealt by local catalogs, no Ray: stop a run, build a fresh session from
    its checkpoint, continue; the weights and the key log equal an unbroken run's."""
    straight = TrainingSession.build(_config(digit_shards, 96), key_log_dir=tmp_path / "a")
    straight.train()

    stopped = TrainingSession.build(_config(digit_shards, 48), key_log_dir=tmp_path / "b")
    stopped.train()
    checkpoint = tmp_path / "checkpoint"
    stopped.checkpoint().save(checkpoint, stopped.cfg)
    assert (checkpoint / CATALOG_FILE).exists() and (checkpoint / rank_file(0)).exists()
    assert json.loads((checkpoint / CATALOG_FILE).read_text()).keys() == {"synthetic", "real"}

    torch.manual_seed(999)  # whatever the process drew before does not matter
    resumed = TrainingSession.build(
        _config(digit_shards, 96), checkpoint=checkpoint, key_log_dir=tmp_path / "b"
    )
    assert resumed.state == stopped.state
    resumed.train()
    assert resumed.state == straight.state
    for key, value in straight.refiner.module.state_dict().items():
        assert torch.equal(resumed.refiner.module.state_dict()[key], value), key

    def keys(run: str) -> list[list[str]]:
        lines = (tmp_path / run / key_log_name(0)).read_text().splitlines()
        return [json.loads(line)["keys"] for line in lines]

    assert keys("b") == keys("a")  # the resume logged on from its position, nothing twice


@pytest.mark.slow  # out of the quick tier
def test_screen_runs_without_a_history_buffer(digit_shards, tmp_path, capsys) -> None:
    """schedule.buffer_size=0 (a value the bundled search offers) turns the buffer off, in
    screen as in training: the session builds no buffer instead of one of capacity 0."""
    out = tmp_path / "screen"
    args = ["screen", "--preset", "debug", "--validation", str(digit_shards["real_train_labeled"]),
            "--out", str(out), "--num-seeds", "2", "--epochs", "1", "--threads", "1",
            "--set", f"data.synthetic={digit_shards['synthetic']}",
            "--set", f"data.real={digit_shards['real']}",
            "--set", "schedule.buffer_size=0"]  # fmt: skip
    main(args)
    report = json.loads((out / "report.json").read_text())
    assert report["screen"]["num_images"] == 32 + 16 + 96
    assert "buffer_size: 0" in (out / "config.yaml").read_text()
