"""Ray addresses: a bounded wait for the cluster RAY_ADDRESS names, and a local instance's own.

ray.init on an address where nothing listens never returns: it logs "Failed to connect to GCS"
every 30 s (and refine holds its output's lease meanwhile). Here the address's TCP port is tried
first, once a second, for at most connect_wait_s (default RAY_CONNECT_WAIT_S; run.ray_connect_wait_s
for train): a head that is starting gets that long to come up, then the job stops in one line
naming the address.

A local instance gets its address before it starts (free_local_address), so its processes can
be told which Ray is theirs (ray_start.ensure_ray).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Iterator

from simgan_dist.errors import SimganError
from simgan_dist.train.dist import free_port

RAY_CONNECT_WAIT_S = 60.0
PROBE_EVERY_S = 1.0


class RayAddressError(SimganError, ConnectionError):
    """Nothing answers at the address RAY_ADDRESS names."""


def host_and_port(address: str) -> tuple[str, int] | None:
    """(host, port) of "host:port", "ray://host:port" or "http://host:port"; None for the
    names Ray resolves itself ("auto", "local") and for anything without a port."""
    rest = address.strip().split("://", 1)[-1].split("/", 1)[0]
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.strip("[]"), int(port)


def wait_for_address(address: str, connect_wait_s: float = RAY_CONNECT_WAIT_S) -> None:
    """Return once address's port accepts a connection; RayAddressError after connect_wait_s."""
    target = host_and_port(address)
    if target is None:
        return
    deadline = time.monotonic() + connect_wait_s
    said = False
    while True:
        try:
            with socket.create_connection(target, timeout=max(0.1, min(5.0, connect_wait_s))):
                return
        except OSError as err:
            reason = err.strerror or type(err).__name__
        if time.monotonic() >= deadline:
            raise RayAddressError(
                f"RAY_ADDRESS={address}: no Ray cluster answers there ({reason}) after "
                f"{connect_wait_s:g} s; start it, fix the address, or unset RAY_ADDRESS for a "
                "local Ray"
            )
        if not said:
            print(f"[simgan] RAY_ADDRESS={address}: nothing answers yet ({reason}); trying for "
                  f"up to {connect_wait_s:g} s", file=sys.stderr, flush=True)  # fmt: skip
            said = True
        time.sleep(min(PROBE_EVERY_S, max(0.0, deadline - time.monotonic())))


def free_local_address() -> tuple[str, int]:
    """("127.0.0.1:PORT", PORT) for a port that is free now: a local instance's GCS port."""
    port = free_port()
    return f"127.0.0.1:{port}", port


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """os.environ with values set inside the block and as it was after it."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
