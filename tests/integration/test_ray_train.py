"""Training on the real stack: Ray Train TorchTrainer workers, each with DeepSpeed engines for R and D."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from simgan_dist.cli import main
from simgan_dist.config import load_config
from simgan_dist.train.checkpoint import NETWORKS_FILE, find_latest_checkpoint
from simgan_dist.train.ray_train import run_training
from simgan_dist.train.runs import start_run

pytestmark = pytest.mark.ray


def _train(overrides: list[str]) -> Path:
    cfg = load_config(preset="debug", overrides=overrides)
    cfg, run_dir = start_run(cfg)
    result = run_training(cfg, run_dir)
    assert result.error is None, result.error
    return Path(result.checkpoint.path)


def _networks(checkpoint: Path) -> dict[str, dict[str, torch.Tensor]]:
    return torch.load(checkpoint / NETWORKS_FILE, weights_only=True)


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
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    board.Reload()
    grids = board.Images("grid synthetic | refined | real")
    assert [g.step for g in grids] == [72, 144]  # past each 64-image interval, and the end once
    assert "_hparams_/session_start_info" in board.summary_metadata

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
    assert all(r.get("phase") != "pretrain_refiner" for r in resumed_rows[len(rows) :])


def test_resume_equals_uninterrupted_run(ray_local, debug_overrides, tmp_path: Path) -> None:
    """Stopped at 144 images and resumed to 240 ends where one straight run to 240 ends: networks,
    optimizer states, the global history buffer and the data position are restored, and the
    randomness follows from (seed, rank, cur_nimg) with no RNG state saved."""
    same = {
        "schedule.adversarial_nimg": 96,
        "run.checkpoint_every_nimg": 96,
        "optim.optimizer": "adam",
        "optim.refiner_lr": 0.003,
        "optim.disc_lr": 0.003,
    }
    straight = _train(debug_overrides(**{**same, "schedule.adversarial_nimg": 192}))
    stopped = _train(debug_overrides(**same, **{"run.name": "stopped"}))
    assert stopped.name == "checkpoint-000000000144"
    main(["train", "--resume", str(tmp_path / "stopped"), "--set", "schedule.adversarial_nimg=192"])
    resumed = find_latest_checkpoint(tmp_path / "stopped")
    assert resumed.name == straight.name == "checkpoint-000000000240"
    a, b = _networks(straight), _networks(resumed)
    for part in ("refiner", "disc"):
        for key, value in a[part].items():
            torch.testing.assert_close(b[part][key], value, rtol=0, atol=1e-6, msg=key)
    for rank in (0, 1):
        buf_a = torch.load(straight / f"rank-{rank:04d}.pt", weights_only=True)["buffer"]
        buf_b = torch.load(resumed / f"rank-{rank:04d}.pt", weights_only=True)["buffer"]
        assert torch.equal(buf_a["slice"]["storage"], buf_b["slice"]["storage"])


@pytest.mark.parametrize("victim", ["RayTrainWorker", "ShardCatalog"])
def test_killed_worker_restarts_from_checkpoint(
    ray_local, debug_overrides, live_actors, tmp_path, victim
) -> None:
    """A training worker process, or a shard catalog's (issue 29 item 3), killed mid-run: Ray
    Train restarts the group from the latest checkpoint (run.max_failures=1), a catalog comes
    back with the checkpoint's record, and the run still finishes."""
    import os
    import signal
    import threading
    import time

    cfg = load_config(
        preset="debug",
        overrides=debug_overrides(
            **{
                "schedule.adversarial_nimg": 3000,
                "run.checkpoint_every_nimg": 512,
                # A catalog's death fails the group once; under load the restarted group may
                # also meet the catalog still restarting, which is a second failure.
                "run.max_failures": 1 if victim == "RayTrainWorker" else 2,
                "run.name": f"killed-{victim}",
            }
        ),
    )
    cfg, run_dir = start_run(cfg)
    results: list = []

    def fit() -> None:
        try:
            results.append(run_training(cfg, run_dir))
        except Exception as err:  # shown by the assertion below, not lost in the thread
            results.append(err)

    thread = threading.Thread(target=fit)
    thread.start()
    deadline = time.time() + 240
    # Ray writes its snapshot once a reported checkpoint is registered: only then can a restart
    # resume from it (a kill while the first one is still uploading restarts from scratch).
    while not (run_dir / "checkpoint_manager_snapshot.json").exists() and time.time() < deadline:
        time.sleep(0.5)
    workers = live_actors(victim)
    assert workers, f"no live {victim} found"
    os.kill(workers[0].pid, signal.SIGKILL)
    killed_at = time.time()
    thread.join(timeout=600)
    assert results and getattr(results[0], "error", results[0]) is None, results
    final = find_latest_checkpoint(run_dir)
    assert final.name == "checkpoint-000000003048"  # 48 pretraining + 3000 adversarial
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    resumes = [r["cur_nimg"] for r in rows if r.get("event") == "resumed"]
    assert resumes and all(r > 0 for r in resumes)  # restarted from a checkpoint
    assert len(resumes) == 1 or victim == "ShardCatalog"
    assert time.time() > killed_at


def test_losses_gone_non_finite_stop_with_one_line_and_no_final_checkpoint(
    ray_local, debug_overrides, tmp_path: Path, capsys
) -> None:
    """lr 1e30 is finite (accepted) but blows R up within a few steps: the run must stop with the
    worker's own message, not Ray's wrapper, and publish no checkpoint of the broken weights."""
    args = ["train", "--preset", "debug"]
    overrides = {
        "run.name": "blows-up",
        "optim.refiner_lr": "1.0e+30",
        "run.checkpoint_every_nimg": 10**6,
    }
    for item in debug_overrides(**overrides):
        args += ["--set", item]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    message = str(exit_info.value.code)
    assert message.startswith("simgan train: training failed: rank ")
    assert (
        "NonFiniteLossError" in message and "non-finite in pretrain_refiner by cur_nimg" in message
    )
    assert "\n" not in message and "Traceback" not in message
    assert not list((tmp_path / "blows-up").glob("checkpoint-*"))


def test_a_pipe_url_in_training_is_refused_in_one_line(debug_overrides, capsys) -> None:
    args = ["train", "--preset", "debug"]
    for item in debug_overrides(**{"data.real": "pipe:cat /etc/passwd"}):
        args += ["--set", item]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    # Refused as the config field it comes from, before a run directory or Ray exists.
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "simgan: config error: data.real: pipe:cat /etc/passwd: pipe: URLs run shell" in err
    assert "Traceback" not in err
