"""Processes a bench starts itself: two timed loops side by side, and a free loopback port."""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Callable

from simgan_dist.errors import InputError


def run_two_processes(target: Callable[..., None], args: tuple) -> dict:
    """Start target(*args, sync, results) in two spawned processes: sync is a 2-party barrier,
    each process puts its figures (images_per_s, measured_nimg, measured_s) on results. Returns
    their sum; an InputError when a process dies without figures."""
    ctx = multiprocessing.get_context("spawn")  # a fork would copy this process's threads
    sync, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, sync, results)) for _ in range(2)]
    for proc in procs:
        proc.start()
    figures: list[dict] = []
    try:
        while len(figures) < len(procs):
            try:
                figures.append(results.get(timeout=5))
            except queue.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise InputError(f"a bench process exited with code {dead[0]}") from None
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    return {
        "images_per_s": sum(f["images_per_s"] for f in figures),
        "measured_nimg": sum(f["measured_nimg"] for f in figures),
        "measured_s": max(f["measured_s"] for f in figures),
        "processes_images_per_s": [f["images_per_s"] for f in figures],
    }
