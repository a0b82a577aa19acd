"""One job per location at a time: a lease object under it, refreshed while the job runs.

Two jobs on one location (a refine output, a training run) would delete each other's files, so a
job takes the lease object before it writes and gives it back when it ends. On an S3-compatible
store the writes are conditional (conditional.py): the lease is created only if absent, taken
over or refreshed only if unchanged since it was read, so the store picks the winner of a race.
Elsewhere (local files, GCS, a store that ignores the conditions) taking is write, wait SETTLE_S,
read back: of two jobs that start together the later write wins and the other sees a foreign
token and stops. While the job runs a thread rewrites the lease every refresh_s; a job that finds
another token in it has been overtaken (it was presumed dead) and stops at its next check.

A lease is free when it is absent, when its holder has not refreshed it for ttl_s (a job that died
on another machine; this assumes the machines' clocks agree to well within ttl_s), or when its
holder ran on this host and that process is gone (a killed job is rerun at once, not ttl_s later).
Each kind of job is a subclass naming its lease object and the words of its messages.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass

from simgan_dist.errors import SimganError, kind
from simgan_dist.io import conditional
from simgan_dist.io.location import Location

LEASE_TTL_S = 120.0  # a holder silent this long is presumed dead
REFRESH_S = 15.0  # several refreshes fit in one ttl, so a slow store does not lose the lease
SETTLE_S = 0.5  # between writing the lease and reading it back (a few store round trips)


class LeaseBusyError(SimganError, RuntimeError):
    """Another job holds the location (or took it over from this one)."""


@dataclass(frozen=True)
class LeaseRecord:
    token: str
    host: str
    pid: int
    started: float  # time.time() of the holder
    renewed: float

    def describe(self, now: float) -> str:
        return (
            f"host {self.host}, pid {self.pid}, started {time.ctime(self.started)}, "
            f"last refreshed {now - self.renewed:.0f} s ago"
        )


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


class Lease:
    """The lease on one location: `with SomeLease(...) as lease:`, lease.check() while working.
    Subclasses set NAME (the lease object under the location), KIND and TARGET (the words in
    the messages: "another KIND job is writing this TARGET"), OTHERWISE (what else the user
    can do) and ERROR."""

    NAME = "_lease.json"
    KIND = "other"
    TARGET = "location"
    OTHERWISE = "choose another location"
    ERROR: type[LeaseBusyError] = LeaseBusyError

    def __init__(
        self,
        output: Location | str,
        *,
        ttl_s: float = LEASE_TTL_S,
        refresh_s: float = REFRESH_S,
        settle_s: float = SETTLE_S,
        conditional_writes: bool = True,
    ) -> None:
        self.output = Location.of(output)
        self.lease = self.output.join(self.NAME)
        self.url = self.lease.url
        self.ttl_s, self.refresh_s, self.settle_s = ttl_s, refresh_s, settle_s
        self.token = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.started = time.time()
        self.lost: str | None = None  # set by the refresher when another job took the lease
        # The ETag of this job's last write while writes are conditional; None: write-wait-read.
        self.conditional = conditional_writes and conditional.supported(self.lease)
        self.tag: str | None = None
        self.written_at = time.monotonic()  # of this job's last write of the lease
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> LeaseRecord | None:
        try:
            blob = self.lease.read_bytes()
        except FileNotFoundError:
            return None
        return self._parse(blob)

    def _read_tagged(self) -> tuple[LeaseRecord | None, str | None]:
        """(record, its ETag), both None when there is no lease."""
        found = conditional.read_tagged(self.lease)
        return (None, None) if found is None else (self._parse(found[0]), found[1])

    def _parse(self, blob: bytes) -> LeaseRecord:
        try:
            return LeaseRecord(**json.loads(blob))
        except (ValueError, TypeError) as err:  # not ours to interpret: a person must look
            raise self.ERROR(
                f"{self.url}: unreadable {self.KIND} lease ({kind(err)}: {err}); if no "
                f"{self.KIND} job runs on this {self.TARGET}, delete it and rerun"
            ) from None

    def is_free(self, record: LeaseRecord | None, now: float) -> bool:
        if record is None or record.token == self.token:
            return True
        if now - record.renewed > self.ttl_s:
            return True
        return record.host == self.host and not _process_alive(record.pid)

    def _record_bytes(self) -> bytes:
        record = LeaseRecord(self.token, self.host, os.getpid(), self.started, time.time())
        return json.dumps(asdict(record)).encode()

    def _write(self) -> None:
        self._put()
        self.written_at = time.monotonic()

    def age_s(self) -> float:
        """Seconds since this job last wrote its lease (past ttl_s, another job may take it)."""
        return time.monotonic() - self.written_at

    def _put(self) -> None:
        if self.conditional:  # only over this job's own last write (or where none is)
            try:
                self.tag = conditional.put_if(self.lease, self._record_bytes(), tag=self.tag)
            except FileNotFoundError:  # deleted by hand: this job still holds it
                self.tag = conditional.put_if(self.lease, self._record_bytes(), tag=None)
            return
        with self.lease.atomic_write() as f:
            f.write(self._record_bytes())

    def _refuse(self, record: LeaseRecord) -> LeaseBusyError:
        return self.ERROR(
            f"{self.output}: another {self.KIND} job is writing this {self.TARGET} "
            f"({record.describe(time.time())}); wait for it to end, or {self.OTHERWISE} "
            f"(a job that died on another machine frees it {self.ttl_s:.0f} s after its last "
            "refresh)"
        )

    def acquire(self) -> None:
        """Take the lease or raise ERROR naming its holder; then keep it refreshed."""
        if self.conditional:
            self._take_conditionally()
        if not self.conditional:  # not an S3 store, or one that ignores the conditions
            self._take_by_write_and_read_back()
        self._thread = threading.Thread(
            target=self._refresh, name=f"{self.KIND}-lease", daemon=True
        )
        self._thread.start()

    def _take_conditionally(self) -> None:
        current, tag = self._read_tagged()
        if not self.is_free(current, time.time()):
            assert current is not None
            raise self._refuse(current)
        data = self._record_bytes()
        try:
            # Absent: create it; stale or dead holder: replace exactly what was read.
            self.tag = conditional.put_if(self.lease, data, tag=tag)
        except (conditional.ConditionFailed, FileNotFoundError):
            raise self._lost_race(self.read()) from None
        if not conditional.honours_conditions(self.lease, data):
            self.conditional, self.tag = False, None  # a store that ignores If-None-Match

    def _lost_race(self, winner: LeaseRecord | None) -> LeaseBusyError:
        if winner is None:
            return self.ERROR(
                f"{self.output}: the {self.KIND} lease vanished while this job took it (another "
                "job ending or starting at the same moment); rerun"
            )
        return self._refuse(winner)

    def _take_by_write_and_read_back(self) -> None:
        current = self.read()
        if not self.is_free(current, time.time()):
            assert current is not None
            raise self._refuse(current)
        self._write()
        time.sleep(self.settle_s)
        current = self.read()
        if current is None or current.token != self.token:
            raise self._lost_race(current)

    def _refresh(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                current = self.read()
            except Exception:  # a flaky store: keep trying until the ttl says otherwise
                continue
            if current is not None and current.token != self.token:
                self.lost = (
                    f"{self.output}: another {self.KIND} job took over this {self.TARGET} "
                    f"({current.describe(time.time())}); this job stops so the two do not mix"
                )
                return
            try:
                self._write()
            except conditional.ConditionFailed:
                continue  # changed since this job's last write: the next read names who took it
            except Exception:
                continue

    def check(self) -> None:
        """Raise ERROR when another job has taken the lease from this one."""
        if self.lost:
            raise self.ERROR(self.lost)

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):  # an expired or unreadable lease is not this job's
            self.release()

    def release(self) -> None:
        """Stop refreshing and delete the lease if it is still this job's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        current = self.read()
        if current is not None and current.token == self.token:
            fs, path = self.lease.filesystem()
            fs.rm(path)
