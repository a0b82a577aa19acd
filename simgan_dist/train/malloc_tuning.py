"""glibc malloc settings for training processes: keep freed activation memory instead of
returning it to the OS after every step."""

from __future__ import annotations


def tune_malloc() -> bool:
    """Keep glibc malloc from handing freed activation memory back to the OS after every step.

    With glibc's defaults, a loop in a process's main thread re-faults its multi-MB activation
    buffers each step (measured here: ~20% of the time in page faults, and 150-190 images/s
    from run to run for the digits bare loop; 215-225 with this). Raising the trim threshold
    alone makes it worse (it also freezes the mmap threshold at 128 KiB): both are set.
    Returns whether it applied (glibc only). Training workers call it first thing (their data
    loader processes, forked, inherit it); the bench's bare loops call it too, so both are
    compared with the same allocator. Costs: freed memory stays mapped (up to the process's peak, plus blocks
    under 32 MiB kept in the heap instead of mmap'd)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))
