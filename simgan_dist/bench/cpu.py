"""Where this machine's CPU went during a timed window: training workers, their loaders, Ray and the
driver, everything else, idle. Explains a 2-worker figure on a box with few cores.

A thread samples every process's CPU time (psutil) and the machine's busy time every
`interval_s`; idle is what the window's cores did not spend (steal and iowait included). One pass over ~100 processes costs ~5-10 ms of CPU, so 2 s keeps the sampler under
0.5% of one core; it runs in the driver and is counted under "ray_and_driver".
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import psutil

WORKER_TITLE = "ray::RayTrainWorker"  # Ray sets each Train worker's process title to this
ROLES = ("workers", "loaders", "ray_and_driver", "other", "idle")


@dataclass
class Sample:
    """One pass of the sampler."""

    time: float  # time.time(), comparable with metrics.jsonl's "time"
    busy_s: float  # the machine's busy CPU seconds so far, all cores (user, nice, system, irqs)
    pids: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid -> (role, cpu s)


def classify(pid: int, parents: dict[int, int], titles: dict[int, str], driver: int) -> str:
    """A process's role from its ancestry: a loader below a Train worker (a forked loader keeps
    the worker's title, so ancestry goes first), a Train worker by its title, Ray or the driver
    below the driver (a local Ray's raylet, GCS and actors), else "other"."""
    seen = set()
    ancestor = parents.get(pid)
    while ancestor and ancestor not in seen:
        if titles.get(ancestor, "").startswith(WORKER_TITLE):
            return "loaders"
        seen.add(ancestor)
        ancestor = parents.get(ancestor)
    if titles.get(pid, "").startswith(WORKER_TITLE):
        return "workers"
    if pid == driver or driver in seen:
        return "ray_and_driver"
    return "other"


def take_sample(driver: int) -> Sample:
    """Every readable process's CPU seconds and role now, and the machine's busy time."""
    parents: dict[int, int] = {}
    titles: dict[int, str] = {}
    cpu: dict[int, float] = {}
    for proc in psutil.process_iter(["ppid", "cpu_times", "cmdline"]):
        times = proc.info["cpu_times"]
        if times is None:  # gone, or not ours to read
            continue
        parents[proc.pid] = proc.info["ppid"]
        titles[proc.pid] = " ".join(proc.info["cmdline"] or ())
        cpu[proc.pid] = times.user + times.system
    machine = psutil.cpu_times()
    # Not sum(machine): guest time is already inside user/nice, and steal is not ours.
    busy = sum(getattr(machine, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq"))
    sample = Sample(time=time.time(), busy_s=busy)
    for pid, seconds in cpu.items():
        sample.pids[pid] = (classify(pid, parents, titles, driver), seconds)
    return sample


def cores_between(first: Sample, last: Sample, num_cpus: int) -> dict[str, float]:
    """Cores each role used from `first` to `last`: CPU seconds over wall seconds. A process is
    counted only while alive at both samples; the rest of the machine's busy time is "other"."""
    wall = last.time - first.time
    if wall <= 0:
        raise ValueError("cores_between needs two samples in time order")
    used = dict.fromkeys(ROLES, 0.0)
    for pid, (role, seconds) in last.pids.items():
        if pid in first.pids and first.pids[pid][0] == role:
            used[role] += seconds - first.pids[pid][1]
    busy = last.busy_s - first.busy_s
    used["other"] += max(0.0, busy - sum(used.values()))
    used["idle"] = max(0.0, num_cpus * wall - busy)
    cores = {role: used[role] / wall for role in ROLES}
    cores["num_cpus"] = float(num_cpus)
    cores["window_s"] = wall
    return cores


def combine_cores(parts: list[dict[str, float]]) -> dict[str, float]:
    """Several windows' accounts as one: each role's cores weighted by its window's length."""
    total = sum(p["window_s"] for p in parts)
    combined = {role: sum(p[role] * p["window_s"] for p in parts) / total for role in ROLES}
    combined["num_cpus"] = parts[0]["num_cpus"]
    combined["window_s"] = total
    return combined


class CpuSampler:
    """Samples in a daemon thread between start() and stop(); cores(t0, t1) accounts the window
    between the first sample at or after t0 and the last at or before t1 (None if fewer than
    two samples fall inside: the window was shorter than ~2 intervals)."""

    def __init__(self, interval_s: float = 2.0) -> None:
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self.driver = os.getpid()
        self.num_cpus = psutil.cpu_count() or 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(take_sample(self.driver))
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def cores(self, start: float, end: float) -> dict[str, float] | None:
        inside = [s for s in self.samples if start <= s.time <= end]
        if len(inside) < 2:
            return None
        return cores_between(inside[0], inside[-1], self.num_cpus)
