"""The second hostile probe's waits (issue 30 items 9, 12b, 25): every wait on something outside the
process is bounded and ends in one line. Real local Ray instances, no mocks."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cli_run import run_simgan

from simgan_dist.io.shardio import write_shards
from simgan_dist.refine.ray_pool import refine_shards
from simgan_dist.refine.shard import RefineSettings
from simgan_dist.train import ray_start
from simgan_dist.train.dist import free_port

pytestmark = pytest.mark.ray


class Hung(BaseException):
    """A wait that did not end: a BaseException, so no `except Exception` on the way swallows it."""


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging: what these cases did before they were bounded."""

    def expire(signum: int, frame: object) -> None:
        raise Hung(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err[-2000:]
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


# Item 9: more workers or threads than the Ray instance has CPUs.


@pytest.mark.parametrize(
    ("overrides", "asked"),
    [
        (["run.num_workers=3", "schedule.batch_size=12"], "run.num_workers=3 workers of "
         "run.threads_per_worker=1 CPUs"),
        (["run.threads_per_worker=4"], "run.num_workers=2 workers of run.threads_per_worker=4 CPUs"),
    ],
)  # fmt: skip
def test_train_asking_more_cpus_than_the_local_ray_has_stops_in_one_line(
    ray_local, debug_overrides, capsys, overrides: list[str], asked: str
) -> None:
    args = ["train", "--preset", "debug"]
    for item in debug_overrides() + overrides:
        args += ["--set", item]
    with deadline(120):  # forever before, a 25-line traceback every 60 s
        status, _, err = run_simgan(args, capsys)
    assert status == 1
    line = _one_line(err)
    assert line.startswith(f"simgan: error: {asked}: the local Ray has 2 CPU"), line


def _shards(directory: Path, num_shards: int) -> Path:
    rng = np.random.default_rng(0)
    samples = [
        (f"s{i:04d}", rng.integers(0, 256, (28, 28), dtype=np.uint8), {"label": i % 10})
        for i in range(8 * num_shards)
    ]
    write_shards(samples, directory, "part", 8)
    return directory


def test_refine_with_more_workers_than_cpus_stops_in_one_line_and_frees_its_output(
    ray_local, checkpoint: Path, tmp_path: Path
) -> None:
    source = _shards(tmp_path / "in", 3)
    settings = RefineSettings(batch_size=8, num_workers=3, threads_per_worker=1)
    with deadline(120), pytest.raises(ray_start.RayResourceError) as err:
        refine_shards(checkpoint, str(source), tmp_path / "out", settings, progress=False)
    assert str(err.value).startswith("--num-workers 3 workers of 1 CPUs: the local Ray has 2 CPU")
    # The output's lease was given back: the same job with workers that fit runs.
    fitting = RefineSettings(batch_size=8, num_workers=2, threads_per_worker=1)
    with deadline(180):
        summary = refine_shards(checkpoint, str(source), tmp_path / "out", fitting, progress=False)
    assert summary["num_images"] == 24


def test_on_a_cluster_the_wait_for_nodes_is_bounded(ray_local, monkeypatch, capsys) -> None:
    monkeypatch.setattr(ray_start, "_started_here", None)  # as if joined through RAY_ADDRESS
    monkeypatch.setattr(ray_start, "RESOURCE_POLL_S", 0.2)
    ray_start.check_resources(2, {"CPU": 1}, "two workers")  # fits: returns at once
    started = time.monotonic()
    with deadline(30), pytest.raises(ray_start.RayResourceError) as err:
        ray_start.check_resources(3, {"CPU": 1}, "three workers", wait_s=1.5)
    assert 1.5 <= time.monotonic() - started < 10
    assert str(err.value) == (
        "three workers: the Ray cluster still has 2 CPU (room for 2 such workers) after waiting "
        "1.5 s for nodes (run.resource_wait_s)"
    )
    # One line while it waits, so a user sees why nothing happens yet.
    waiting = _one_line(capsys.readouterr().err)
    assert waiting == (
        "[simgan] three workers: the Ray cluster has 2 CPU (room for 2 such workers); waiting "
        "up to 1.5 s for nodes to join"
    )
    with pytest.raises(ray_start.RayResourceError, match="has 2 CPU .room for 0 such workers"):
        ray_start.check_resources(1, {"CPU": 4}, "one worker of 4 CPUs", wait_s=0)


# Item 12b: RAY_ADDRESS naming an address where nothing listens.


def _simgan(code: str, address: str) -> subprocess.CompletedProcess:
    """A `simgan` command in a process of its own (this one is connected to Ray already)."""
    env = {**os.environ, "RAY_ADDRESS": address}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=150)  # fmt: skip  # retried forever before


def _refused(address: str, wait_s: int) -> str:
    return (
        f"RAY_ADDRESS={address}: no Ray cluster answers there (Connection refused) after "
        f"{wait_s} s; start it, fix the address, or unset RAY_ADDRESS for a local Ray"
    )


def _lines(err: str) -> list[str]:
    assert "Traceback" not in err, err[-2000:]
    return [line for line in err.strip().splitlines() if line.strip()]


def test_train_with_ray_address_where_nothing_listens_stops_in_one_line(debug_overrides) -> None:
    address = f"127.0.0.1:{free_port()}"
    args = ["train", "--preset", "debug"]
    for item in debug_overrides() + ["run.ray_connect_wait_s=2"]:
        args += ["--set", item]
    started = time.monotonic()
    done = _simgan(f"from simgan_dist.cli import main; main({args!r})", address)
    assert done.returncode == 1 and time.monotonic() - started < 120
    waiting, last = _lines(done.stderr)
    assert waiting.startswith(f"[simgan] RAY_ADDRESS={address}: nothing answers yet")
    assert last == f"simgan: error: {_refused(address, 2)}"


def test_refine_with_ray_address_where_nothing_listens_stops_and_frees_its_output(
    checkpoint: Path, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    source, output = _shards(tmp_path / "in", 2), tmp_path / "out"
    args = ["refine", "--checkpoint", str(checkpoint), "--input", str(source), "--output",
            str(output), "--no-progress"]  # fmt: skip
    code = (
        "from simgan_dist.train import ray_address; ray_address.RAY_CONNECT_WAIT_S = 2; "
        f"from simgan_dist.cli import main; main({args!r})"
    )
    done = _simgan(code, address)
    assert done.returncode == 1
    assert _lines(done.stderr)[-1] == f"simgan refine: {_refused(address, 2)}"
    assert not (output / "_refine" / "lease.json").exists()  # held forever before


# Item 25: two local Rays on one host (two `simgan` commands at once).


@pytest.fixture
def another_local_ray():
    """A second command's local Ray on this host, started as `simgan` starts one."""
    code = (
        "from simgan_dist.train.ray_start import ensure_ray; ensure_ray(num_cpus=1); "
        "print('up', flush=True); import time; time.sleep(600)"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    other = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "up"
        yield
    finally:
        other.send_signal(signal.SIGINT)  # as Ctrl-C: its Ray shuts down with it
        try:
            other.wait(timeout=60)
        except subprocess.TimeoutExpired:
            other.kill()
            other.wait()


def test_two_local_rays_on_one_host_keep_the_console_to_our_lines(
    ray_local, another_local_ray, debug_overrides, capfd
) -> None:
    args = ["train", "--preset", "debug"]
    for item in debug_overrides(**{"run.num_workers": 1}):
        args += ["--set", item]
    with deadline(300):
        status, _, err = run_simgan(args, capfd)
    time.sleep(3)  # worker lines reach the driver's console a moment later
    out, late = capfd.readouterr()
    err += late
    assert status == 0, err[-3000:]
    # Ray Train's PlacementGroupCleaner looked for "the" local Ray: a 30-line traceback before.
    assert "Found multiple active Ray instances" not in out + err, err[-3000:]
    assert "Traceback" not in out + err, err[-3000:]
    assert "RAY_ADDRESS" not in os.environ  # only Ray's own processes were told the address
