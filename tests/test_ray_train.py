"""Training on the real stack: Ray Train TorchTrainer workers, each with DeepSpeed engines for R and D."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from simgan_dist.checkpoint import NETWORKS_FILE, find_latest_checkpoint
from simgan_dist.cli import main
from simgan_dist.config import load_config
from simgan_dist.networks import build_discriminator, build_refiner
from simgan_dist.ray_train import run_training
from simgan_dist.runs import start_run

pytestmark = pytest.mark.ray


def _train(overrides: list[str]) -> Path:
    cfg = load_config(preset="debug", overrides=overrides)
    cfg, run_dir = start_run(cfg)
    result = run_training(cfg, run_dir)
    assert result.error is None, result.error
    return Path(result.checkpoint.path)


def _networks(checkpoint: Path) -> dict[str, dict[str, torch.Tensor]]:
    return torch.load(checkpoint / NETWORKS_FILE, weights_only=True)


def test_two_workers_reproduce_one_worker(ray_local, debug_overrides) -> None:
    """Same global batch (8) and data order, buffer off: DeepSpeed's gradient averaging over 2
    gloo ranks must give the weights that 1 rank gets on the whole batch."""
    same = {
        "schedule.history_fraction": 0.0,
        "data.rank_split": "batch_rows",
        "schedule.adversarial_nimg": 160,
        "optim.refiner_lr": 0.01,
        "optim.disc_lr": 0.01,
    }
    one = _networks(_train(debug_overrides(**same, **{"run.num_workers": 1})))
    two = _networks(_train(debug_overrides(**same, **{"run.num_workers": 2})))
    cfg = load_config(preset="debug")
    torch.manual_seed(cfg.run.seed)
    initial = {
        "refiner": build_refiner(cfg.model).state_dict(),
        "disc": build_discriminator(cfg.model).state_dict(),
    }
    for net in ("refiner", "disc"):
        moved = max((one[net][k] - initial[net][k]).abs().max().item() for k in initial[net])
        assert moved > 1e-4, f"{net} did not train"
        for key, value in one[net].items():
            torch.testing.assert_close(two[net][key], value, rtol=0, atol=1e-5, msg=key)


def test_train_writes_outputs_and_resumes(ray_local, debug_overrides, tmp_path: Path) -> None:
    args = ["train", "--preset", "debug"]
    for item in debug_overrides(**{"run.name": "resume-me"}):
        args += ["--set", item]
    main(args)
    run_dir = tmp_path / "resume-me"
    first = find_latest_checkpoint(run_dir)
    assert first.name == "checkpoint-000000000144"  # 32 + 16 + 96 images of the debug preset
    assert {p.name for p in first.iterdir()} >= {
        "networks.pt",
        "state.json",
        "config.yaml",
        "rank-0000.pt",
        "rank-0001.pt",
    }
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"loss_r", "loss_d", "d_acc_real", "d_acc_refined", "images_per_s"} <= set(rows[-1])
    assert list((run_dir / "grids").glob("grid-*.png"))
    assert list((run_dir / "tensorboard").glob("events.*"))

    # A second start under the same name is refused; --resume continues it for more images.
    with pytest.raises(SystemExit):
        main(args)
    main(["train", "--resume", str(run_dir), "--set", "schedule.adversarial_nimg=192"])
    second = find_latest_checkpoint(run_dir)
    assert second.name == "checkpoint-000000000240"
    state = json.loads((second / "state.json").read_text())
    assert state["loop"]["cur_nimg"] == 240 and state["loop"]["phase_index"] == 2
    resumed_rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert resumed_rows[-1]["cur_nimg"] == 240
    # Resuming started from the checkpoint, not from scratch: no pretraining rows were added.
    assert all(r["phase"] != "pretrain_refiner" for r in resumed_rows[len(rows) :])
