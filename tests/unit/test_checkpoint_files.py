"""Unreadable checkpoint files (issue 18, item 10): one CheckpointError naming the file; a run
directory falls back to its previous intact checkpoint; a pickle payload is refused, not run."""

from __future__ import annotations

import shutil

import pytest
import torch

from simgan_dist.config import load_config
from simgan_dist.train.checkpoint import (
    NETWORKS_FILE,
    CheckpointError,
    load_refiner,
)
from simgan_dist.train.session import save_initial_checkpoint


class Payload:
    def __reduce__(self):
        return (print, ("payload ran",))


@pytest.fixture
def run_dir(tmp_path):
    cfg = load_config(preset="debug")
    save_initial_checkpoint(cfg, tmp_path / "run" / "checkpoint-000000000096", seed=1)
    save_initial_checkpoint(cfg, tmp_path / "run" / "checkpoint-000000000192", seed=2)
    return tmp_path / "run"


def test_truncated_networks_file_falls_back_to_the_previous_checkpoint(run_dir, caplog) -> None:
    newest = run_dir / "checkpoint-000000000192"
    data = (newest / NETWORKS_FILE).read_bytes()
    (newest / NETWORKS_FILE).write_bytes(data[: len(data) // 2])
    _, _, directory = load_refiner(run_dir)
    assert directory.name == "checkpoint-000000000096"
    assert "unreadable" in caplog.text and str(newest / NETWORKS_FILE) in caplog.text
    with pytest.raises(CheckpointError, match=r"networks\.pt: unreadable"):
        load_refiner(newest)  # a checkpoint named on its own: no silent substitute


def test_no_loadable_checkpoint_is_one_error(run_dir) -> None:
    for directory in run_dir.iterdir():
        (directory / NETWORKS_FILE).write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="no checkpoint loads") as err:
        load_refiner(run_dir)
    assert "\n" not in str(err.value)


def test_pickle_payload_is_refused_without_running(run_dir, capsys) -> None:
    only = run_dir / "checkpoint-000000000096"
    shutil.rmtree(run_dir / "checkpoint-000000000192")
    torch.save({"refiner": Payload(), "disc": {}}, only / NETWORKS_FILE)
    with pytest.raises(CheckpointError, match="refused: it holds Python objects") as err:
        load_refiner(only)
    assert "weights_only=False" not in str(err.value)
    assert "payload ran" not in capsys.readouterr().out
