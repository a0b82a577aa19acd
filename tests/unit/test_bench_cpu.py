"""bench_cpu: processes are given their roles by ancestry and title, and real CPU use is accounted."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from simgan_dist.bench.cpu import (
    ROLES,
    WORKER_TITLE,
    CpuSampler,
    Sample,
    classify,
    combine_cores,
    cores_between,
    drift,
    format_trust,
    machine_sample,
    steal_since,
    trust,
)

# Spins until killed; with SPAWN=1 it first starts a spinning child of its own. (The interpreter
# comes from PYTHON: with a Ray-style argv[0], sys.executable is empty.)
SPINNER = """
import os, subprocess, sys
if os.environ.get("SPAWN"):
    env = {**os.environ, "SPAWN": ""}
    subprocess.Popen([os.environ["PYTHON"], "-c", sys.argv[1], sys.argv[1]], env=env)
while True:
    pass
"""


def test_roles_follow_title_and_ancestry() -> None:
    driver, raylet, worker, loader, actor, stranger = 10, 11, 12, 13, 14, 15
    parents = {driver: 1, raylet: driver, worker: raylet, loader: worker, actor: raylet}
    parents[stranger] = 1
    titles = {worker: f"{WORKER_TITLE}.train_fn", actor: "ray::ShardCatalog", raylet: "raylet"}
    titles[loader] = titles[worker]  # forked: it keeps the worker's title
    roles = {pid: classify(pid, parents, titles, driver) for pid in parents}
    assert roles == {
        driver: "ray_and_driver",
        raylet: "ray_and_driver",
        worker: "workers",
        loader: "loaders",
        actor: "ray_and_driver",
        stranger: "other",
    }
    # A loop in the parent table (pid reuse between reads) ends instead of spinning.
    assert classify(20, {20: 21, 21: 20}, {}, driver) == "other"


def test_cores_between_counts_roles_other_and_idle() -> None:
    first = Sample(time=100.0, busy_s=10.0, pids={1: ("workers", 5.0)})
    first.pids[2] = ("loaders", 1.0)
    last = Sample(time=102.0, busy_s=13.5, pids={1: ("workers", 7.0)})
    last.pids[2] = ("loaders", 1.5)
    last.pids[3] = ("ray_and_driver", 9.0)  # started inside the window: not counted by pid
    cores = cores_between(first, last, num_cpus=2)
    assert cores["workers"] == pytest.approx(1.0)
    assert cores["loaders"] == pytest.approx(0.25)
    assert cores["other"] == pytest.approx(0.5)  # 3.5 busy seconds, 2.5 of them accounted
    assert cores["idle"] == pytest.approx(0.25)  # 4 CPU seconds in all, 3.5 busy
    assert sum(cores[r] for r in ROLES) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        cores_between(last, first, num_cpus=2)


def test_steal_is_its_own_role_not_idle() -> None:
    first = Sample(time=0.0, busy_s=0.0, steal_s=1.0, pids={1: ("workers", 0.0)})
    last = Sample(time=2.0, busy_s=2.0, steal_s=1.6, pids={1: ("workers", 2.0)})
    cores = cores_between(first, last, num_cpus=2)
    assert cores["workers"] == pytest.approx(1.0)
    assert cores["steal"] == pytest.approx(0.3)  # 0.6 stolen CPU seconds over 2 s
    assert cores["idle"] == pytest.approx(0.7)  # 4 CPU seconds: 2 busy, 0.6 stolen
    assert sum(cores[r] for r in ROLES) == pytest.approx(2.0)


def test_machine_steal_is_read_and_bounded() -> None:
    first = machine_sample()
    time.sleep(0.2)
    steal = steal_since(first)
    assert steal["window_s"] >= 0.2
    assert 0.0 <= steal["steal_share"] <= 1.0
    assert steal["steal_cores"] == pytest.approx(steal["steal_share"] * os.cpu_count())


def test_trust_verdict_flags_drift_and_steal() -> None:
    assert drift([100.0]) == 0.0
    assert drift([100.0, 50.0, 80.0]) == pytest.approx(0.2)  # first against last part
    steady = trust({"bare": [100.0, 95.0]}, steal_share=0.01)
    assert steady["trusted"] and "ratios trusted" in format_trust(steady)
    drifting = trust({"bare": [100.0, 80.0], "ours": [10.0, 10.0]}, steal_share=0.01)
    assert not drifting["trusted"] and len(drifting["reasons"]) == 1
    assert "bare drifted 20%" in format_trust(drifting)
    stolen = trust({"bare": [100.0, 100.0]}, steal_share=0.2)
    assert not stolen["trusted"] and "stole 20.0%" in stolen["reasons"][0]


def test_combine_cores_weights_by_window() -> None:
    a = dict.fromkeys(ROLES, 0.0) | {"workers": 1.0, "num_cpus": 2.0, "window_s": 1.0}
    b = dict.fromkeys(ROLES, 0.0) | {"workers": 2.0, "num_cpus": 2.0, "window_s": 3.0}
    combined = combine_cores([a, b])
    assert combined["workers"] == pytest.approx(1.75)
    assert combined["window_s"] == 4.0


def test_sampler_accounts_a_worker_and_its_loader(tmp_path) -> None:
    """A process titled like a Train worker, spinning, with a spinning child: one core each to
    "workers" and "loaders" (less what this machine's other load takes from them)."""
    env = {**os.environ, "SPAWN": "1", "PYTHON": sys.executable}
    worker = subprocess.Popen(
        [WORKER_TITLE, "-c", SPINNER, SPINNER], executable=sys.executable, env=env
    )
    try:
        with CpuSampler(interval_s=0.25) as sampler:
            time.sleep(1.0)  # both processes started and spinning
            start = time.time()
            time.sleep(2.0)
            end = time.time()
        cores = sampler.cores(start, end)
    finally:
        subprocess.run(["pkill", "-P", str(worker.pid)], check=False)
        worker.kill()
        worker.wait()
    assert cores is not None
    num_cpus = cores["num_cpus"]
    # Two spinners on num_cpus cores: together they get at least a core's worth even on a
    # busy 2-core CI box; each one is in its role, not in "ray_and_driver" or "other".
    assert cores["workers"] > 0.3 and cores["loaders"] > 0.3
    assert cores["workers"] + cores["loaders"] > min(1.0, num_cpus / 2)
    # "ray_and_driver" is this test process and its other descendants: in a full suite the
    # session's local Ray (raylet, GCS, dashboard) idles there at ~0.2 cores, so its size depends
    # on what ran before. What must hold is that neither spinner was counted there: each takes
    # more than what the driver's side gets.
    assert cores["ray_and_driver"] < min(cores["workers"], cores["loaders"])
    assert sum(cores[r] for r in ROLES) == pytest.approx(num_cpus, rel=0.05)
    assert sampler.cores(end + 10, end + 20) is None  # no samples there
