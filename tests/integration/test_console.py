"""What `simgan train` prints to a redirected console: our lines, not Ray's or DeepSpeed's own.

Each run is a process of its own with a private RAY_TMPDIR, so it starts its own local Ray the
way a user's command does (the pytest session's Ray is left alone)."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import tempfile
import termios
from pathlib import Path

import pytest

NOISE = (
    "Setting accelerator to CPU",  # DeepSpeed's import, once per worker
    "Started a local Ray instance",  # Ray's driver INFO
    "Token authentication is enabled",  # Ray's driver WARNING
    "Reporting training result",  # Ray Train's per-checkpoint dict
    "Started training worker group",  # Ray Train's controller INFO
)


def _train(digit_shards, tmp_path: Path, *flags: str) -> tuple[str, str]:
    sets = {
        "data.synthetic": digit_shards["synthetic"],
        "data.real": digit_shards["real"],
        "run.storage_path": tmp_path / "runs",
        "run.num_workers": 1,
    }
    args = [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]
    with tempfile.TemporaryDirectory(prefix="rc-", dir="/tmp") as root:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SIMGAN_"))}
        env.update(RAY_TMPDIR=root, RAY_USAGE_STATS_ENABLED="0")
        done = subprocess.run(
            [sys.executable, "-m", "simgan_dist", *flags, "train", "--preset", "debug", *args],
            env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, done.stderr


@pytest.mark.ray
def test_the_default_console_is_our_lines_only(digit_shards, tmp_path) -> None:
    out, err = _train(digit_shards, tmp_path)
    lines = [line for line in out.splitlines() if "[simgan] kimg" in line]
    assert lines and all(" | " in line for line in lines)
    assert "adversarial 3/3 [##########] 100% ETA phase 0s, run 0s" in lines[-1]
    assert out.splitlines()[-1].startswith("[simgan] final checkpoint: ")  # nothing after it
    for noise in NOISE:
        assert noise not in out + err, noise
    assert "\x1b[" not in out + err  # no colour codes in a redirected log


@pytest.mark.ray
def test_verbose_brings_back_ray_and_deepspeed_lines(digit_shards, tmp_path) -> None:
    out, err = _train(digit_shards, tmp_path, "--verbose")
    assert "Setting accelerator to CPU" in out + err
    assert "Reporting training result" in out + err


def _simgan_on_a_terminal(*args: str) -> str:
    """What the command writes to stderr when stderr is a terminal (a pseudo-terminal here)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMGAN_")}
    leader, follower = pty.openpty()
    # A new pseudo-terminal is 0 columns wide, which leaves a bar no room at all.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    with subprocess.Popen([sys.executable, "-m", "simgan_dist", *args], env=env,
                          stdout=subprocess.DEVNULL, stderr=follower) as process:  # fmt: skip
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the command ended and closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=120) == 0
    os.close(leader)
    return b"".join(chunks).decode()


def test_shard_commands_draw_a_bar_on_a_terminal_and_quiet_hides_it(digit_shards) -> None:
    real = str(digit_shards["real"])
    for command in ("verify", "stats"):
        err = _simgan_on_a_terminal("shards", command, real)
        assert f"{command} digits-real-train: 100%" in err and "3000/3000" in err
        assert _simgan_on_a_terminal("--quiet", "shards", command, real) == ""
