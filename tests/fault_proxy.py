"""A fault-injecting TCP proxy on 127.0.0.1 in front of a real server (the tests' local S3).

Each connection the proxy accepts is handled by the fault set at that moment:

- "pass":  bytes are copied both ways unchanged;
- "delay": the server's answer is held back `delay_s` seconds, then passed on;
- "stall": the request is read and never answered (a silent endpoint: accepts, never answers);
- "drop":  the connection is closed as soon as the request arrives, nothing answered;
- "cut":   the first `cut_after` bytes of the answer are passed on, then the connection closes;
- "unconditional": requests pass with their If-Match / If-None-Match headers renamed, as a
           store that ignores conditional writes would treat them.

`faulty_connections` limits the fault to the first N connections (later ones pass), so a retry
that succeeds can be told from one that gives up. Only loopback: the proxy binds 127.0.0.1.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

Fault = Literal["pass", "delay", "stall", "drop", "cut", "unconditional"]
# Same lengths: a request is passed on unchanged but for the names (small requests, one chunk).
CONDITION_HEADERS = (
    (b"\r\nIf-None-Match:", b"\r\nX-Ignored-Cnd:"),
    (b"\r\nIf-Match:", b"\r\nX-Ignore:"),
)
CHUNK = 65536


class FaultProxy:
    def __init__(self, target: str) -> None:
        host, _, port = target.removeprefix("http://").partition(":")
        self.target = (host, int(port))
        self.fault: Fault = "pass"
        self.delay_s = 0.0
        self.cut_after = 0
        self.faulty_connections: int | None = None  # None: every connection
        self.num_connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)  # so the accept loop sees close() soon
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def set(
        self,
        fault: Fault,
        *,
        delay_s: float = 0.0,
        cut_after: int = 0,
        faulty_connections: int | None = None,
    ) -> None:
        """The fault for connections accepted from now on."""
        with self._lock:
            self.fault, self.delay_s, self.cut_after = fault, delay_s, cut_after
            self.faulty_connections = faulty_connections
            self.num_connections = 0

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        with self._lock:
            for conn in self._open:
                _close(conn)
        self._thread.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by close()
                return
            client.settimeout(None)
            with self._lock:
                self.num_connections += 1
                limit = self.faulty_connections
                faulty = limit is None or self.num_connections <= limit
                fault: Fault = self.fault if faulty else "pass"
                self._open.append(client)
            args = (client, fault, self.delay_s, self.cut_after)
            threading.Thread(target=self._serve, args=args, daemon=True).start()

    def _serve(self, client: socket.socket, fault: Fault, delay_s: float, cut_after: int) -> None:
        if fault in ("stall", "drop"):
            client.recv(CHUNK)  # the request arrives; a stall then holds it until close()
            if fault == "drop":
                _close(client)
            return
        try:
            server = socket.create_connection(self.target, timeout=10)
        except OSError:
            _close(client)
            return
        with self._lock:
            self._open.append(server)
        rename = fault == "unconditional"
        upstream = threading.Thread(
            target=_copy, args=(client, server, 0.0, None, rename), daemon=True
        )
        upstream.start()
        delay_s = delay_s if fault == "delay" else 0.0
        _copy(server, client, delay_s=delay_s, limit=cut_after if fault == "cut" else None)
        _close(client)
        _close(server)


def _copy(
    source: socket.socket,
    sink: socket.socket,
    delay_s: float = 0.0,
    limit: int | None = None,
    rename_conditions: bool = False,
) -> None:
    """Copy until either side closes; hold the first chunk delay_s; stop after limit bytes;
    rename the conditional-write headers."""
    sent, first = 0, True
    try:
        while True:
            data = source.recv(CHUNK)
            if not data:
                return
            if first and delay_s:
                time.sleep(delay_s)
            first = False
            if rename_conditions:
                for header, renamed in CONDITION_HEADERS:
                    data = data.replace(header, renamed)
            if limit is not None:
                data = data[: limit - sent]
            sink.sendall(data)
            sent += len(data)
            if limit is not None and sent >= limit:
                return
    except OSError:
        return


def _close(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()


@contextmanager
def fault_proxy(target: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(target)
    try:
        yield proxy
    finally:
        proxy.close()
