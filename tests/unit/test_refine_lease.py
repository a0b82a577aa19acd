"""The refine output lease (issue 18, item 5): one job per output; dead or silent holders free it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, replace

import pytest

from simgan_dist.refine.lease import LEASE_NAME, LeaseRecord, OutputBusyError, OutputLease

FAST = {"settle_s": 0.0, "refresh_s": 0.05}


def _write_record(output, record: LeaseRecord) -> None:
    path = output / LEASE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(record)))


def _foreign(**changes) -> LeaseRecord:
    now = time.time()
    record = LeaseRecord("f" * 32, "other-host", 4242, now - 5, now)
    return replace(record, **changes)


def test_a_second_job_is_refused_while_the_first_holds_the_output(tmp_path) -> None:
    with OutputLease(str(tmp_path), **FAST):
        assert (tmp_path / LEASE_NAME).exists()
        with pytest.raises(OutputBusyError, match=r"another refine job.*pid \d+"):
            OutputLease(str(tmp_path), **FAST).acquire()
    assert not (tmp_path / LEASE_NAME).exists()  # given back at the end
    with OutputLease(str(tmp_path), **FAST):
        pass


def test_a_live_holder_on_another_host_keeps_the_lease_until_its_ttl(tmp_path) -> None:
    _write_record(tmp_path, _foreign())
    with pytest.raises(OutputBusyError, match="host other-host, pid 4242"):
        OutputLease(str(tmp_path), **FAST).acquire()
    _write_record(tmp_path, _foreign(renewed=time.time() - 3600))
    with OutputLease(str(tmp_path), **FAST) as lease:
        assert lease.read().token == lease.token


def test_a_holder_that_died_on_this_host_frees_the_lease_at_once(tmp_path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    lease = OutputLease(str(tmp_path), **FAST)
    _write_record(tmp_path, _foreign(host=lease.host, pid=int(gone.stdout)))
    with lease:
        assert lease.read().token == lease.token


def test_a_job_whose_lease_was_taken_over_stops_at_its_next_check(tmp_path) -> None:
    with OutputLease(str(tmp_path), **FAST) as lease:
        lease.check()
        _write_record(tmp_path, _foreign())  # another job presumed this one dead
        deadline = time.monotonic() + 5
        while lease.lost is None and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(OutputBusyError, match="took over"):
            lease.check()
    assert (tmp_path / LEASE_NAME).exists()  # the new holder's lease is left alone


def test_an_unreadable_lease_is_named_and_never_overwritten(tmp_path) -> None:
    (tmp_path / "_refine").mkdir()
    (tmp_path / LEASE_NAME).write_text("{not json")
    with pytest.raises(OutputBusyError, match=r"lease.json: unreadable refine lease"):
        OutputLease(str(tmp_path), **FAST).acquire()
    assert (tmp_path / LEASE_NAME).read_text() == "{not json"
