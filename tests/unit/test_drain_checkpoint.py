"""A drain notice (a spot node about to be reclaimed) makes the run checkpoint at once, so the
restarted run repeats no image (issue 29 item 3). The notice comes through the hooks' trainer
link, the way Ray Train's get_preemption_info gives it; the reclaim is the run dying right after."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from simgan_dist.config import load_config
from simgan_dist.train.hooks import LocalLink, TrainingHooks
from simgan_dist.train.run_outputs import key_log_name
from simgan_dist.train.session import TrainingSession


class Reclaimed(Exception):
    """The node went away."""


class DrainingLink(LocalLink):
    """Says "draining" from its `from_call`-th question on; keeps the checkpoint reported after
    it (as Ray Train would), then the node is reclaimed."""

    def __init__(self, from_call: int, keep: Path) -> None:
        super().__init__()
        self.num_calls, self.from_call, self.keep = 0, from_call, keep

    def draining(self) -> bool:
        self.num_calls += 1
        return self.num_calls >= self.from_call

    def report(self, metrics, checkpoint_dir=None, checkpoint_dir_name=None) -> None:
        super().report(metrics, checkpoint_dir, checkpoint_dir_name)
        if checkpoint_dir is not None and self.num_calls >= self.from_call:
            shutil.copytree(checkpoint_dir, self.keep)
            raise Reclaimed


def _config(digit_shards: dict[str, Path]):
    return load_config(
        preset="debug",
        overrides=[
            "run.num_workers=1",
            f"data.synthetic={digit_shards['synthetic']}",
            f"data.real={digit_shards['real']}",
            "schedule.adversarial_nimg=160",
            "data.record_keys=true",
            "run.checkpoint_every_nimg=1000000",  # only the just-in-time one
            "run.drain_check_every_nimg=16",
            "score.every_nimg=0",
        ],
    )


def _keys(run_dir: Path) -> list[list[str]]:
    lines = (run_dir / key_log_name(0)).read_text().splitlines()
    return [json.loads(line)["keys"] for line in lines]


def test_a_drain_notice_checkpoints_at_once_and_the_restart_repeats_no_image(
    digit_shards, tmp_path: Path
) -> None:
    cfg = _config(digit_shards)
    straight = TrainingSession.build(cfg, key_log_dir=tmp_path / "straight")
    straight.train(TrainingHooks(straight, tmp_path / "straight", LocalLink()))

    run_dir, kept = tmp_path / "reclaimed", tmp_path / "kept-checkpoint"
    first = TrainingSession.build(cfg, key_log_dir=run_dir)
    link = DrainingLink(from_call=5, keep=kept)
    with pytest.raises(Reclaimed):
        first.train(TrainingHooks(first, run_dir, link))
    assert [name for _, name in link.reports if name] == [f"checkpoint-{first.state.cur_nimg:012d}"]
    assert 0 < first.state.cur_nimg < straight.state.cur_nimg

    restarted = TrainingSession.build(cfg, checkpoint=kept, key_log_dir=run_dir)
    restarted.train(TrainingHooks(restarted, run_dir, LocalLink()))
    assert restarted.state == straight.state
    assert _keys(run_dir) == _keys(tmp_path / "straight")  # every batch once, none repeated
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("drain notice" in str(row.get("event")) for row in events)
