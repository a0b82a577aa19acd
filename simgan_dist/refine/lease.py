"""One refine job per output at a time: the lease `_refine/lease.json` (io/lease.py).

Two jobs on one output would delete each other's temporaries and overwrite each other's report, so
a job takes the lease before it reads the done-records and gives it back when it ends.
"""

from __future__ import annotations

from simgan_dist.io.lease import Lease, LeaseBusyError, LeaseRecord

__all__ = ["LEASE_NAME", "LeaseRecord", "OutputBusyError", "OutputLease"]

LEASE_NAME = "_refine/lease.json"


class OutputBusyError(LeaseBusyError):
    """Another refine job holds the output (or took it over from this one)."""


class OutputLease(Lease):
    """The lease on one refine output: `with OutputLease(...) as lease:`, lease.check() while working."""

    NAME = LEASE_NAME
    KIND = "refine"
    TARGET = "output"
    OTHERWISE = "give another --output"
    ERROR = OutputBusyError

    def __enter__(self) -> OutputLease:
        self.acquire()
        return self
