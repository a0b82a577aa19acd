"""The second hostile probe's run cases (issue 30): who owns a run, what resume starts from, which
checkpoint files count, and how signals end a job. Real files and a real local Ray, no mocks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from simgan_dist.cli import main
from simgan_dist.config import load_config
from simgan_dist.train.runs import RunLease, prepare_run, run_lease

FAST = {"settle_s": 0.0, "refresh_s": 0.05}


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of one `simgan` command run in this process; a SystemExit
    message is what the interpreter would print on stderr."""
    message = ""
    try:
        main(argv)
        status = 0
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
        message = "" if isinstance(exit_.code, int) or exit_.code is None else str(exit_.code)
    out, err = capsys.readouterr()
    return status, out, err + message


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
    with RunLease(str(run), None, **FAST):  # the first job, still running
        status, _, err = _run(_train_args(debug_overrides(**{"run.name": "shared"})), capsys)
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
