"""The second hostile probe's run cases (issue 30): who owns a run, what resume starts from, which
checkpoint files count, and how signals end a job. Real files and a real local Ray, no mocks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_run import run_simgan

from simgan_dist.config import ConfigError, load_config
from simgan_dist.train.checkpoint import (
    STATE_FILE,
    CheckpointError,
    find_latest_checkpoint,
    load_refiner,
)
from simgan_dist.train.ray_train import RAY_RECORD_FILE, align_checkpoint_record
from simgan_dist.train.runs import RunLease, prepare_run, run_config, run_lease, start_run
from simgan_dist.train.session import save_initial_checkpoint

FAST = {"settle_s": 0.0, "refresh_s": 0.05}


def _last_line(err: str) -> str:
    assert "Traceback" not in err, err[-2000:]
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines, "no message"
    return lines[-1]


def _train_args(overrides: list[str]) -> list[str]:
    args = ["train", "--preset", "debug"]
    for item in overrides:
        args += ["--set", item]
    return args


# Item 0: one training job per run.


def test_a_second_train_on_a_held_run_stops_in_one_line_naming_run_and_holder(
    debug_overrides, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "shared"
    with RunLease(str(run), **FAST):  # the first job, still running
        status, _, err = run_simgan(_train_args(debug_overrides(**{"run.name": "shared"})), capsys)
    assert status == 1
    line = _last_line(err)
    assert str(run) in line and f"pid {os.getpid()}" in line and socket.gethostname() in line
    assert not (run / "config.yaml").exists()  # the first job's run is untouched


def test_a_stale_run_lease_is_taken_over(debug_overrides, tmp_path: Path) -> None:
    cfg = prepare_run(load_config(preset="debug", overrides=debug_overrides(**{"run.name": "r"})))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    lease_file = tmp_path / "r" / RunLease.NAME
    lease_file.parent.mkdir(parents=True)
    now = time.time()
    for host, pid, renewed in [(socket.gethostname(), int(gone.stdout), now),
                               ("other-host", 4242, now - 3600)]:  # fmt: skip
        record = {"token": "f" * 32, "host": host, "pid": pid, "started": now, "renewed": renewed}
        lease_file.write_text(json.dumps(record))
        with run_lease(cfg) as lease:
            assert lease.read().token == lease.token
        assert not lease_file.exists()  # given back at the end


# Item 5b: resume starts from the newest complete checkpoint, whatever Ray's record says.


@pytest.fixture
def copied_run(debug_overrides, tmp_path: Path):
    """A run holding two complete checkpoints and no Ray record, as a copied run does."""
    cfg, _ = start_run(load_config(preset="debug", overrides=debug_overrides(**{"run.name": "c"})))
    for nimg in (48, 96):
        save_initial_checkpoint(cfg, tmp_path / "c" / f"checkpoint-{nimg:012d}")
    return cfg, tmp_path / "c"


def _recorded_latest(run: Path) -> str:
    from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import (
        _CheckpointManagerState,
    )

    # Parsed as Ray parses it: the record must be one Ray Train 2.60 reads.
    record = _CheckpointManagerState.parse_raw((run / RAY_RECORD_FILE).read_text())
    return record.latest_checkpoint_result.checkpoint_dir_name


def test_a_run_without_rays_record_is_resumed_from_its_newest_checkpoint(copied_run, caplog):
    cfg, run = copied_run
    align_checkpoint_record(cfg)
    assert _recorded_latest(run) == "checkpoint-000000000096"
    assert f"{RAY_RECORD_FILE}) is missing" in caplog.text
    before = (run / RAY_RECORD_FILE).read_bytes()
    align_checkpoint_record(cfg)  # a record that names the newest complete one stays as it is
    assert (run / RAY_RECORD_FILE).read_bytes() == before


def test_an_empty_record_and_a_cut_state_file_resume_from_the_previous_checkpoint(
    copied_run, caplog
) -> None:
    cfg, run = copied_run
    (run / RAY_RECORD_FILE).write_bytes(b"")  # a full disk
    cut = run / "checkpoint-000000000096" / STATE_FILE
    cut.write_text(cut.read_text()[:100])
    align_checkpoint_record(cfg)
    assert _recorded_latest(run) == "checkpoint-000000000048"
    assert "unreadable" in caplog.text and str(cut) in caplog.text


def test_a_run_whose_checkpoints_are_all_incomplete_is_refused(copied_run) -> None:
    cfg, run = copied_run
    for directory in run.glob("checkpoint-*"):
        (directory / STATE_FILE).write_text('{"format": 1, "world_')
    with pytest.raises(CheckpointError, match="no complete checkpoint to resume from"):
        align_checkpoint_record(cfg)
    assert not (run / RAY_RECORD_FILE).exists()


# Item 23: a state.json that does not parse makes its checkpoint incomplete.


def test_a_cut_state_file_falls_back_to_the_previous_checkpoint(
    copied_run, tmp_path: Path, capsys, caplog
) -> None:
    _, run = copied_run
    cut = run / "checkpoint-000000000096" / STATE_FILE
    cut.write_text(cut.read_text()[:100])
    _, _, directory = load_refiner(run)
    assert directory.name == "checkpoint-000000000048"
    assert str(cut) in caplog.text
    status, out, err = run_simgan(
        ["export", str(run), "--out", str(tmp_path / "x"), "--no-onnx"], capsys
    )
    assert status == 0, err
    assert "checkpoint-000000000048" in out


@pytest.mark.parametrize("command", ["export", "refine", "load_refiner"])
def test_a_checkpoint_named_with_a_cut_state_file_stops_in_one_line_naming_it(
    command: str, copied_run, digit_shards, tmp_path: Path, capsys
) -> None:
    _, run = copied_run
    checkpoint = run / "checkpoint-000000000096"
    cut = checkpoint / STATE_FILE
    cut.write_text(cut.read_text()[:100])
    if command == "load_refiner":
        with pytest.raises(CheckpointError, match="unreadable") as err:
            load_refiner(checkpoint)
        assert str(err.value).startswith(str(cut)) and "\n" not in str(err.value)
        return
    argv = {
        "export": ["export", str(checkpoint), "--out", str(tmp_path / "x"), "--no-onnx"],
        "refine": ["refine", "--checkpoint", str(checkpoint), "--input",
                   str(digit_shards["synthetic"]), "--output", str(tmp_path / "out")],
    }[command]  # fmt: skip
    status, _, err = run_simgan(argv, capsys)
    assert status == 1
    line = _last_line(err)
    assert str(cut) in line and "unreadable" in line


# Item 22: a resume keeps the networks' shapes.


@pytest.mark.parametrize(
    "changes",
    [["model.refiner_features=16"], ["model.refiner_blocks=3", "model.image_height=32"]],
    ids=["features", "blocks-and-height"],
)
def test_a_resume_that_changes_network_shapes_is_refused_before_ray_naming_the_fields(
    changes: list[str], copied_run, capsys
) -> None:
    _, run = copied_run
    argv = ["train", "--resume", str(run)]
    for item in changes:
        argv += ["--set", item]
    status, _, err = run_simgan(argv, capsys)
    assert status == 2, err
    line = _last_line(err)
    assert changes[0].split("=")[0] in line and str(run) in line
    assert "image_height" not in line  # changes no parameter (R and D are convolutional)
    assert not (run / RunLease.NAME).exists() and not (run / RAY_RECORD_FILE).exists()


def test_resume_settings_that_keep_the_shapes_pass(copied_run, debug_overrides) -> None:
    cfg, run = copied_run
    resumed = run_config(run, ["model.image_width=32", "schedule.adversarial_nimg=192"])
    assert resumed.model.image_width == 32
    auto = debug_overrides(**{"run.name": "c", "run.resume": "auto", "model.refiner_kernel": 5})
    with pytest.raises(ConfigError, match=r"model\.refiner_kernel: .* was trained with "
                                          r"model\.refiner_kernel=3"):  # fmt: skip
        prepare_run(load_config(preset="debug", overrides=auto))


# Item 24: an export's JSON is checked against its tensors before R is built.


def test_an_export_whose_json_says_200000_features_stops_in_one_line_before_building(
    copied_run, digit_shards, tmp_path: Path, capsys
) -> None:
    from simgan_dist.model.exported import ARCH_FILE, WEIGHTS_FILE, ExportError, read_exported
    from simgan_dist.refine.export import export_refiner

    _, run = copied_run
    export = tmp_path / "export"
    export_refiner(run, export, onnx=False)
    info = json.loads((export / ARCH_FILE).read_text())
    info["model"]["refiner_features"] = 200_000  # R would hold ~1.4 TB of parameters
    (export / ARCH_FILE).write_text(json.dumps(info))
    with pytest.raises(ExportError, match=r"does not fit the model in refiner\.json: .*200000"):
        read_exported(export)
    argv = ["refine", "--checkpoint", str(export), "--input", str(digit_shards["synthetic"]),
            "--output", str(tmp_path / "out")]  # fmt: skip
    status, _, err = run_simgan(argv, capsys)
    assert status == 1
    line = _last_line(err)
    assert str(export / WEIGHTS_FILE) in line and "does not fit" in line


@pytest.mark.ray
def test_resume_of_a_copied_run_continues_from_its_checkpoint(
    ray_local, debug_overrides, tmp_path: Path, capsys
) -> None:
    status, _, err = run_simgan(_train_args(debug_overrides(**{"run.name": "copied"})), capsys)
    assert status == 0, err
    run = tmp_path / "copied"
    assert not (run / RunLease.NAME).exists()  # the lease is given back at the end
    first = find_latest_checkpoint(run)
    assert first.name == "checkpoint-000000000144"
    rows = (run / "metrics.jsonl").read_text().splitlines()
    (run / RAY_RECORD_FILE).unlink()
    argv = ["train", "--resume", str(run), "--set", "schedule.adversarial_nimg=192"]
    status, _, err = run_simgan(argv, capsys)
    assert status == 0, err
    assert find_latest_checkpoint(run).name == "checkpoint-000000000240"
    assert first.exists()  # not rotated away by a run restarted from 0 images
    new_rows = [
        json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()[len(rows) :]
    ]
    assert new_rows[0] == {"event": "resumed", "cur_nimg": 144}
    assert all(r["cur_nimg"] > 144 and r["phase"] == "adversarial" for r in new_rows[1:])


# Item 5c: an interrupted search exits 130, as every interrupted command does.


@pytest.mark.ray
def test_an_interrupted_tune_exits_130(ray_local, debug_overrides, tmp_path: Path, capsys) -> None:
    import threading

    from simgan_dist.tune.search import TRIALS_DIR

    done = threading.Event()

    def interrupt_once_a_trial_runs() -> None:  # Ctrl-C while Tune's loop runs
        while not done.wait(0.25):
            if list(tmp_path.glob(f"*/{TRIALS_DIR}/*/config.yaml")):
                os.kill(os.getpid(), signal.SIGINT)
                return

    threading.Thread(target=interrupt_once_a_trial_runs, daemon=True).start()
    argv = ["tune", "--preset", "debug", "--search", "debug"]
    for item in debug_overrides():
        argv += ["--set", item]
    try:
        status, out, err = run_simgan(argv, capsys)
    finally:
        done.set()
    assert status == 130, err[-2000:]
    assert '"interrupted": true' in out and "simgan tune --resume" in out
    assert _last_line(err) == "simgan: interrupted"


# Item 21: SIGTERM (what a scheduler sends) ends a command as Ctrl-C does.


def _processes_marked(mark: str) -> list[int]:
    """Processes whose environment holds mark: the driver's local Ray and every worker it
    started inherit it (their command lines are renamed, their environments are not)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if mark.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _marked_processes_named(mark: str, name: str) -> list[int]:
    found = []
    for pid in _processes_marked(mark):
        try:
            if name.encode() in (Path("/proc") / str(pid) / "cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def _sigterm_once(argv: list[str], started: Callable[[str], bool]) -> tuple[int, str, str]:
    """Run `simgan argv` with its own local Ray, SIGTERM it once started(mark) holds, and return
    (exit status, stderr, mark). Whatever it left running is ended here (by pid), after the
    caller's checks have read it through the mark."""
    mark = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray
    env["SIMGAN_PROBE_MARK"] = mark
    driver = subprocess.Popen([sys.executable, "-m", "simgan_dist.cli", *argv], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not started(mark):
            assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
            time.sleep(0.1)
        driver.send_signal(signal.SIGTERM)
        _, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    return driver.returncode, err, mark


def _assert_stopped_like_ctrl_c(status: int, err: str, mark: str) -> None:
    try:
        assert status == 130, err[-3000:]
        assert _last_line(err) == "simgan: interrupted"
        deadline = time.monotonic() + 30
        while _processes_marked(mark) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _processes_marked(mark), "Ray processes left behind"
    finally:
        for pid in _processes_marked(mark):  # started by this test: ended by id
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.ray
def test_sigterm_of_the_train_driver_exits_130_and_leaves_no_ray_process(
    debug_overrides, tmp_path: Path
) -> None:
    run = tmp_path / "term"
    argv = _train_args(debug_overrides(**{"run.name": "term", "schedule.adversarial_nimg": 10**6}))
    # Once the first checkpoint is written, the workers are training.
    status, err, mark = _sigterm_once(argv, lambda mark: bool(list(run.glob("checkpoint-*"))))
    _assert_stopped_like_ctrl_c(status, err, mark)


@pytest.mark.ray
def test_sigterm_of_the_refine_driver_exits_130_and_leaves_no_ray_process(
    digit_shards, tmp_path: Path
) -> None:
    # A refiner slow enough (64 features, 4 blocks) that 3,000 images are still in flight.
    cfg = load_config(preset="debug", overrides=["model.refiner_features=64",
                                                  "model.refiner_blocks=4"])  # fmt: skip
    checkpoint = save_initial_checkpoint(cfg, tmp_path / "run" / "checkpoint-000000000000")
    argv = ["refine", "--checkpoint", str(checkpoint), "--input", str(digit_shards["real"]),
            "--output", str(tmp_path / "out"), "--num-workers", "1", "--no-progress"]  # fmt: skip
    status, err, mark = _sigterm_once(
        argv, lambda mark: bool(_marked_processes_named(mark, "RefineWorker"))
    )
    _assert_stopped_like_ctrl_c(status, err, mark)
