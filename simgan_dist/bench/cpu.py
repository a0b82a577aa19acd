"""Where this machine's CPU went during a timed window: training workers, their loaders, Ray and the
driver, everything else, time stolen by the hypervisor, idle. Explains a 2-worker figure on a box
with few cores, and says when a bench's ratios are not to be trusted.

A thread samples every process's CPU time (psutil) and the machine's busy and steal time every
`interval_s`; steal (/proc/stat's column: a vCPU that wanted to run while the hypervisor ran
someone else) is its own role, and idle is what the window's cores neither spent nor had stolen
(iowait included). One pass over ~100 processes costs ~5-10 ms of CPU, so 2 s keeps the sampler
under 0.5% of one core; it runs in the driver and is counted under "ray_and_driver".
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from simgan_dist.errors import InputError

WORKER_TITLE = "ray::RayTrainWorker"  # Ray sets each Train worker's process title to this
ROLES = ("workers", "loaders", "ray_and_driver", "other", "steal", "idle")
# A bench's ratios are flagged as untrustworthy when two parts of one figure (its first and last
# halves, rounds or passes) differ by more than DRIFT_LIMIT of the faster, or when more than
# STEAL_LIMIT of the machine's cores were stolen: the loops then ran on a machine that changed
# under them, and a ratio compares different machines.
DRIFT_LIMIT = 0.15
STEAL_LIMIT = 0.05


@dataclass
class Sample:
    """One pass of the sampler."""

    time: float  # time.time(), comparable with metrics.jsonl's "time"
    busy_s: float  # the machine's busy CPU seconds so far, all cores (user, nice, system, irqs)
    steal_s: float = 0.0  # CPU seconds stolen by the hypervisor so far, all cores
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
    sample = machine_sample()
    for pid, seconds in cpu.items():
        sample.pids[pid] = (classify(pid, parents, titles, driver), seconds)
    return sample


def machine_sample() -> Sample:
    """The machine's busy and stolen CPU seconds now (no processes)."""
    machine = psutil.cpu_times()
    # Not sum(machine): guest time is already inside user/nice, and steal is not ours.
    busy = sum(getattr(machine, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq"))
    return Sample(time=time.time(), busy_s=busy, steal_s=getattr(machine, "steal", 0.0))


def cores_between(first: Sample, last: Sample, num_cpus: int) -> dict[str, float]:
    """Cores each role used from `first` to `last`: CPU seconds over wall seconds. A process is
    counted only while alive at both samples; the rest of the machine's busy time is "other"."""
    wall = last.time - first.time
    if wall <= 0:
        raise InputError("cores_between needs two samples in time order")
    used = dict.fromkeys(ROLES, 0.0)
    for pid, (role, seconds) in last.pids.items():
        if pid in first.pids and first.pids[pid][0] == role:
            used[role] += seconds - first.pids[pid][1]
    busy = last.busy_s - first.busy_s
    used["other"] += max(0.0, busy - sum(used.values()))
    used["steal"] = max(0.0, last.steal_s - first.steal_s)
    used["idle"] = max(0.0, num_cpus * wall - busy - used["steal"])
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


def steal_since(first: Sample, num_cpus: int | None = None) -> dict[str, float]:
    """Machine-wide stolen cores from `first` (a machine_sample()) to now, and their share."""
    num_cpus = num_cpus or psutil.cpu_count() or 1
    last = machine_sample()
    wall = max(last.time - first.time, 1e-9)
    cores = max(0.0, last.steal_s - first.steal_s) / wall
    return {"steal_cores": cores, "steal_share": cores / num_cpus, "window_s": wall}


def drift(rates: list[float]) -> float:
    """How far a figure's first and last parts differ, as a share of the faster (0 for one part)."""
    if len(rates) < 2 or max(rates[0], rates[-1]) <= 0:
        return 0.0
    return abs(rates[-1] - rates[0]) / max(rates[0], rates[-1])


def trust(parts: dict[str, list[float]], steal_share: float) -> dict[str, Any]:
    """The verdict on a bench's ratios: trusted unless a figure's parts drift by more than
    DRIFT_LIMIT or more than STEAL_LIMIT of the machine was stolen; the reasons say which."""
    reasons = [
        f"{name} drifted {100 * d:.0f}% between its first and last part (limit "
        f"{100 * DRIFT_LIMIT:.0f}%)"
        for name, rates in parts.items()
        if (d := drift(rates)) > DRIFT_LIMIT
    ]
    if steal_share > STEAL_LIMIT:
        reasons.append(
            f"the hypervisor stole {100 * steal_share:.1f}% of the machine's cores (limit "
            f"{100 * STEAL_LIMIT:.0f}%)"
        )
    return {"trusted": not reasons, "reasons": reasons, "steal_share": steal_share}


def format_trust(verdict: dict[str, Any]) -> str:
    """The trust line every bench table ends with."""
    steal = f"steal {100 * float(verdict['steal_share']):.1f}% of the cores"
    if verdict["trusted"]:
        return f"trust: ratios trusted (parts within {100 * DRIFT_LIMIT:.0f}%, {steal})"
    return "trust: ratios NOT to be trusted: " + "; ".join(verdict["reasons"])
