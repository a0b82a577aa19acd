"""Bounded waits on the store (issue 30 item 11), through a fault-injecting proxy before the local S3 server."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import s3fs
from fault_proxy import FaultProxy, fault_proxy

from simgan_dist.cli import main
from simgan_dist.io import urls
from simgan_dist.io.location import Location
from simgan_dist.io.shardio import write_shards

BUCKET = "simgan-test"
ONE_SECOND = "config_kwargs={read_timeout: 1}"  # a silent store given up in seconds, not minutes


def _samples(n: int):
    rng = np.random.default_rng(n)
    for i in range(n):
        yield f"s-{i:04d}", rng.integers(0, 256, (28, 28), dtype=np.uint8), {"label": i % 10}


@pytest.fixture
def proxy(s3_server: str, s3_bucket):
    s3fs.S3FileSystem.clear_instance_cache()
    with fault_proxy(s3_server) as p:
        yield p
    s3fs.S3FileSystem.clear_instance_cache()


def test_s3_filesystems_get_bounded_timeouts_and_tries_unless_options_say_otherwise() -> None:
    fs, _ = urls.filesystem("s3://bucket/key", {"endpoint_url": "http://127.0.0.1:9"})
    assert fs.config_kwargs["connect_timeout"] == 10 and fs.config_kwargs["read_timeout"] == 20
    assert fs.config_kwargs["retries"] == {"total_max_attempts": 3, "mode": "standard"}
    assert fs.retries == 2  # s3fs's own tries around botocore's (5 x 5 before)
    own = {"endpoint_url": "http://127.0.0.1:9", "config_kwargs": {"read_timeout": 5}}
    fs, _ = urls.filesystem("s3://bucket/key", own)
    assert fs.config_kwargs["read_timeout"] == 5 and fs.config_kwargs["connect_timeout"] == 10
    assert own == {"endpoint_url": "http://127.0.0.1:9", "config_kwargs": {"read_timeout": 5}}


def test_single_faults_are_retried_and_a_silent_store_is_given_up_in_one_line(
    s3_server: str, proxy: FaultProxy
) -> None:
    write_shards(
        _samples(20), Location(f"s3://{BUCKET}/c", {"endpoint_url": s3_server}), "part", 10
    )
    url = f"s3://{BUCKET}/c/part-000000.tar"
    whole = Location(url, {"endpoint_url": s3_server}).read_bytes()
    options = {"endpoint_url": proxy.endpoint, "config_kwargs": {"read_timeout": 1}}
    # One bad answer among good ones is retried: refused, cut in the headers, cut mid-body, silent.
    for fault, cut_after in (("drop", 0), ("cut", 100), ("cut", len(whole) // 2), ("stall", 0)):
        proxy.set(fault, cut_after=cut_after, faulty_connections=1)
        s3fs.S3FileSystem.clear_instance_cache()
        assert Location(url, options).read_bytes() == whole, fault
    proxy.set("delay", delay_s=0.5)  # slower than usual, within the read timeout
    assert Location(url, options).read_bytes() == whole

    proxy.set("stall")  # accepts, never answers
    s3fs.S3FileSystem.clear_instance_cache()
    started = time.monotonic()
    with pytest.raises(OSError) as err:
        Location(url, options).read_bytes()
    waited = time.monotonic() - started
    assert 5 < waited < 15  # 2 x 3 tries of 1 s each, plus backoff (25 tries before)
    assert proxy.num_connections == 6
    message = str(err.value)
    assert message.startswith(f"{url} (endpoint {proxy.endpoint}): ReadTimeoutError")
    assert "read_timeout 1 s, 6 tries" in message and "\n" not in message


def test_shards_verify_on_a_silent_store_errs_in_one_line(
    s3_server: str, proxy: FaultProxy, capsys
) -> None:
    write_shards(
        _samples(20), Location(f"s3://{BUCKET}/c", {"endpoint_url": s3_server}), "part", 10
    )
    proxy.set("stall")
    started = time.monotonic()
    with pytest.raises(SystemExit) as stop:
        main(["shards", "verify", f"s3://{BUCKET}/c", "--storage-option",
              f"endpoint_url={proxy.endpoint}", "--storage-option", ONE_SECOND])  # fmt: skip
    assert stop.value.code == 1 and time.monotonic() - started < 15  # 7 min 37 s by default before
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("simgan: error: ")
    assert f"(endpoint {proxy.endpoint})" in err and "read_timeout 1 s" in err


def test_train_on_a_silent_store_stops_before_ray_starts(
    s3_server: str, proxy: FaultProxy, debug_overrides, capsys
) -> None:
    import ray

    write_shards(
        _samples(20), Location(f"s3://{BUCKET}/c", {"endpoint_url": s3_server}), "part", 10
    )
    proxy.set("stall")
    options = json.dumps({"endpoint_url": proxy.endpoint, "config_kwargs": {"read_timeout": 1}})
    overrides = debug_overrides(**{"data.synthetic": f"s3://{BUCKET}/c",
                                   "data.storage_options": options})  # fmt: skip
    args = ["train", "--preset", "debug"] + [a for item in overrides for a in ("--set", item)]
    ray_before = ray.is_initialized()  # another test of the session may have started one
    started = time.monotonic()
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 1 and time.monotonic() - started < 30  # > 5 min silent before
    assert ray.is_initialized() == ray_before  # the data check runs first, and is bounded
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"simgan: error: s3://{BUCKET}/c")
    assert f"(endpoint {proxy.endpoint})" in err and "read_timeout 1 s" in err
