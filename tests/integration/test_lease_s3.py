"""The lease on an S3 store (issue 29 item 6): conditional writes decide a race with no wait,
a store that ignores them falls back to write-wait-read, both on the loopback S3 server."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import pytest
from fault_proxy import fault_proxy

from simgan_dist.io import conditional
from simgan_dist.io.lease import LeaseRecord
from simgan_dist.io.location import Location
from simgan_dist.refine.lease import LEASE_NAME, OutputBusyError, OutputLease

OUTPUT = "s3://simgan-test/refined"
FAST = {"refresh_s": 0.05}


def _output(endpoint: str) -> Location:
    return Location(OUTPUT, {"endpoint_url": endpoint})


def _foreign(renewed: float) -> bytes:
    record = LeaseRecord("f" * 32, "other-host", 4242, renewed - 5, renewed)
    return json.dumps(asdict(record)).encode()


def _put_lease(client, blob: bytes) -> None:
    client.put_object(Bucket="simgan-test", Key=f"refined/{LEASE_NAME}", Body=blob)


def _lease_blob(client) -> bytes:
    return client.get_object(Bucket="simgan-test", Key=f"refined/{LEASE_NAME}")["Body"].read()


def test_put_if_creates_once_and_replaces_only_what_was_read(s3_server, s3_bucket) -> None:
    target = _output(s3_server).join("obj")
    first = conditional.put_if(target, b"one", tag=None)
    with pytest.raises(conditional.ConditionFailed):
        conditional.put_if(target, b"two", tag=None)
    second = conditional.put_if(target, b"three", tag=first)
    with pytest.raises(conditional.ConditionFailed):  # written since `first` was read
        conditional.put_if(target, b"four", tag=first)
    assert conditional.read_tagged(target) == (b"three", second)
    assert conditional.honours_conditions(target, b"three")


def test_a_second_job_is_refused_without_waiting(s3_server, s3_bucket) -> None:
    output = _output(s3_server)
    started = time.monotonic()
    # settle_s is the fallback's wait: a conditional take never sleeps it.
    with OutputLease(output, settle_s=30.0, **FAST) as lease:
        assert lease.conditional and lease.tag is not None
        with pytest.raises(OutputBusyError, match=r"another refine job.*pid \d+"):
            OutputLease(output, settle_s=30.0, **FAST).acquire()
        time.sleep(0.3)  # a few refreshes, each replacing only this job's own last write
        lease.check()
    assert time.monotonic() - started < 30.0
    assert not conditional.read_tagged(output.join(LEASE_NAME))  # given back


class _Overtaken(OutputLease):
    """A lease whose read is followed, before its write, by another job's write."""

    foreign = b""

    def _read_tagged(self):
        found = super()._read_tagged()
        self.s3.put_object(Bucket="simgan-test", Key=f"refined/{LEASE_NAME}", Body=self.foreign)
        return found


def test_the_store_decides_a_race_to_take_a_free_or_stale_lease(s3_server, s3_bucket) -> None:
    output = _output(s3_server)
    # Absent when read, created by another job before this one's write: the create fails.
    racer = _Overtaken(output, **FAST)
    racer.s3, racer.foreign = s3_bucket, _foreign(time.time())
    with pytest.raises(OutputBusyError, match="host other-host, pid 4242"):
        racer.acquire()
    assert _lease_blob(s3_bucket) == racer.foreign  # the winner's lease is left as it was
    # Stale when read (its holder silent for an hour), taken over by another job first.
    _put_lease(s3_bucket, _foreign(time.time() - 3600))
    racer = _Overtaken(output, **FAST)
    racer.s3, racer.foreign = s3_bucket, _foreign(time.time())
    with pytest.raises(OutputBusyError, match="host other-host"):
        racer.acquire()
    assert _lease_blob(s3_bucket) == racer.foreign
    # Stale and untouched: this job replaces exactly what it read.
    _put_lease(s3_bucket, _foreign(time.time() - 3600))
    with OutputLease(output, **FAST) as lease:
        assert lease.read().token == lease.token


def test_a_job_overtaken_on_s3_stops_and_leaves_the_new_lease(s3_server, s3_bucket) -> None:
    with OutputLease(_output(s3_server), **FAST) as lease:
        taker = _foreign(time.time())
        _put_lease(s3_bucket, taker)  # another job presumed this one dead
        deadline = time.monotonic() + 5
        while lease.lost is None and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(OutputBusyError, match="took over"):
            lease.check()
    assert _lease_blob(s3_bucket) == taker


def test_a_store_that_ignores_conditions_falls_back_to_write_wait_read(
    s3_server, s3_bucket
) -> None:
    with fault_proxy(s3_server) as proxy:
        proxy.set("unconditional")
        output = Location(OUTPUT, {"endpoint_url": proxy.endpoint})
        with OutputLease(output, settle_s=0.05, **FAST) as lease:
            assert not lease.conditional  # the second create went through: not honoured
            with pytest.raises(OutputBusyError, match="another refine job"):
                OutputLease(output, settle_s=0.05, **FAST).acquire()
            time.sleep(0.2)
            lease.check()


def test_write_wait_read_on_s3_when_conditions_are_turned_off(s3_server, s3_bucket) -> None:
    output = _output(s3_server)
    with OutputLease(output, settle_s=0.05, conditional_writes=False, **FAST) as lease:
        assert not lease.conditional
        with pytest.raises(OutputBusyError, match="another refine job"):
            OutputLease(output, settle_s=0.05, conditional_writes=False).acquire()
