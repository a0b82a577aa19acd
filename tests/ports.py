"""Loopback ports for tests: free ones for servers and process groups, closed ones for errors."""

from __future__ import annotations

import socket


def free_ports(count: int) -> list[int]:
    """count distinct ports on 127.0.0.1 that were free a moment ago.

    The sockets are held until all are bound, so the ports differ. Nothing listens on them once
    this returns: a caller that wants a closed port (a connection refused) uses one as it is.
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    """One port on 127.0.0.1 that was free a moment ago (see free_ports)."""
    return free_ports(1)[0]
