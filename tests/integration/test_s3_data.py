"""Shards in a bucket on a real S3 server (moto, 127.0.0.1): URLs, shard tools, bad data, retries."""

from __future__ import annotations

import http.server
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import requests
import webdataset

from simgan_dist.cli import main
from simgan_dist.data.reader import BadSampleError, StreamStats, batch_stream, read_samples
from simgan_dist.io.location import Location
from simgan_dist.io.shardio import encode_png, resolve_shard_urls, write_shard, write_shards
from simgan_dist.train.dist import free_port

BUCKET = "simgan-test"


def _keys(client, prefix: str = "") -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def _samples(prefix: str, n: int, shape=(28, 28)) -> list:
    rng = np.random.default_rng(len(prefix) + n)
    return [
        (f"{prefix}-{i:04d}", rng.integers(0, 256, shape, dtype=np.uint8), {"label": i % 10})
        for i in range(n)
    ]


def _raw_tar(records: list[dict]) -> bytes:
    buf = io.BytesIO()
    writer = webdataset.TarWriter(buf, encoder=False)
    for record in records:
        writer.write(record)
    writer.close()
    return buf.getvalue()


def test_build_verify_stats_in_a_bucket(s3_server, s3_bucket, capsys) -> None:
    option = ["--storage-option", f"endpoint_url={s3_server}"]
    main(["shards", "build", "eyes", "--out", f"s3://{BUCKET}/corpora", "--num-samples", "30",
          "--samples-per-shard", "10", *option])  # fmt: skip
    keys = _keys(s3_bucket)
    assert keys == {f"corpora/eyes-synth/synth-{i:06d}.tar" for i in range(3)} | {
        "corpora/eyes-synth/manifest.json"
    }  # written straight to the bucket; no temporary key is left behind
    location = f"s3://{BUCKET}/corpora/eyes-synth"
    main(["shards", "verify", location, *option])
    assert "eyes-synth: OK" in capsys.readouterr().out.replace(location, "eyes-synth")
    main(["shards", "stats", location, *option])
    stats = json.loads(capsys.readouterr().out)
    assert stats["num_samples"] == 30 and stats["num_shards"] == 3
    assert stats["image_shape_chw"] == [1, 35, 55] and "gaze" in stats["label_keys"]
    assert 0 < stats["pixel_mean"][0] < 255 and stats["pixel_std"][0] > 0
    # A shard damaged in the bucket: verify names it and fails.
    body = s3_bucket.get_object(Bucket=BUCKET, Key="corpora/eyes-synth/synth-000001.tar")
    data = body["Body"].read()
    s3_bucket.put_object(Bucket=BUCKET, Key="corpora/eyes-synth/synth-000001.tar", Body=data[:3000])
    with pytest.raises(SystemExit):
        main(["shards", "verify", location, *option])
    out = capsys.readouterr().out
    assert "synth-000001.tar: checksum mismatch" in out and "synth-000001.tar: unreadable" in out


def test_urls_in_a_bucket(s3_server, s3_bucket) -> None:
    options = {"endpoint_url": s3_server}
    root = f"s3://{BUCKET}/data/synth"
    write_shards(_samples("s", 12), Location(root, options), "part", 4)
    write_shard(Location(f"s3://{BUCKET}/loose/one.tar", options), _samples("t", 2))
    shards = [f"{root}/part-{i:06d}.tar" for i in range(3)]
    assert resolve_shard_urls(Location(root, options)) == shards  # manifest order
    assert resolve_shard_urls(Location(f"{root}/manifest.json", options)) == shards
    assert resolve_shard_urls(Location(f"{root}/part-{{000000..000002}}.tar", options)) == shards
    assert resolve_shard_urls(Location(f"{root}/part-*.tar", options)) == shards
    loose = f"s3://{BUCKET}/loose"
    assert resolve_shard_urls(Location(loose, options)) == [f"{loose}/one.tar"]
    with pytest.raises(FileNotFoundError, match="part-000008"):
        resolve_shard_urls(Location(f"{root}/part-{{000008..000009}}.tar", options))
    with pytest.raises(ValueError, match="allow_pipe"):
        resolve_shard_urls(f"pipe:aws s3 cp {root}/part-000000.tar -")
    keys = [k for k, _, _, _ in read_samples(shards, store=Location(root, options))]
    assert keys == [f"s-{i:04d}" for i in range(12)]


def test_bad_samples_in_a_bucket_are_skipped_and_counted_or_stop(s3_server, s3_bucket) -> None:
    options = {"endpoint_url": s3_server}
    root = f"s3://{BUCKET}/bad"
    write_shard(Location(f"{root}/a-good.tar", options), _samples("good", 8))
    png = _samples("p", 1)[0][1]
    s3_bucket.put_object(Bucket=BUCKET, Key="bad/b-corrupt-png.tar", Body=_raw_tar([
        {"__key__": "corrupt-png", "png": b"\x89PNG not really", "json": b'{"label": 1}'},
        {"__key__": "fine-1", "png": encode_png(png), "json": b'{"label": 1}'},
    ]))  # fmt: skip
    s3_bucket.put_object(Bucket=BUCKET, Key="bad/c-no-json.tar", Body=_raw_tar([
        {"__key__": "no-json", "png": encode_png(png)},
        {"__key__": "fine-2", "png": encode_png(png), "json": b'{"label": 2}'},
    ]))  # fmt: skip
    write_shard(
        Location(f"{root}/d-wrong-size.tar", options), _samples("wrong-size", 1, shape=(20, 20))
    )
    whole = _raw_tar(
        [{"__key__": f"cut-{i}", "png": encode_png(png), "json": b"{}"} for i in range(6)]
    )
    s3_bucket.put_object(
        Bucket=BUCKET, Key="bad/e-truncated.tar", Body=whole[: len(whole) // 2 + 100]
    )
    urls = resolve_shard_urls(Location(root, options))
    assert len(urls) == 5

    stats = StreamStats()
    keys = [k for k, *_ in read_samples(urls, stats=stats, image_shape=(1, 28, 28),
                                        store=Location(root, options), require_json=True)]  # fmt: skip
    assert keys == [f"good-{i:04d}" for i in range(8)] + [
        "fine-1",
        "fine-2",
        "cut-0",
        "cut-1",
        "cut-2",
    ]
    assert stats.num_skipped == 4, stats.skipped  # 3 bad samples + 1 truncated tar
    reasons = "\n".join(stats.skipped)
    assert f"{root}/b-corrupt-png.tar key corrupt-png: ValueError: undecodable PNG" in reasons
    assert f"{root}/c-no-json.tar key no-json: ValueError: no json" in reasons
    assert f"{root}/d-wrong-size.tar key wrong-size-0000: ValueError: image is 20x20" in reasons
    assert (
        f"{root}/e-truncated.tar key after cut-" in reasons and "damaged tar: ReadError" in reasons
    )

    # The training stream: the same skips are counted (4 per epoch)...
    stats = StreamStats()
    stream = batch_stream(urls, 4, (1, 28, 28), seed=0, shuffle_window=1, stats=stats,
                          store=Location(root, options), require_json=True)  # fmt: skip
    for _ in range(7):  # 28 samples: two whole epochs of 13 good ones
        next(stream)
    assert stats.num_skipped >= 8 and "c-no-json.tar key no-json" in "".join(stats.skipped)
    # ...or, with on_bad_sample="stop", the first one stops it, naming the shard and the key.
    with pytest.raises(BadSampleError, match=r"s3://simgan-test/bad/\S+ key \S+"):
        stream = batch_stream(urls, 4, (1, 28, 28), seed=0, shuffle_window=1, on_bad_sample="stop",
                              store=Location(root, options))  # fmt: skip
        for _ in range(4):
            next(stream)


class _FlakyProxy(http.server.ThreadingHTTPServer):
    """Forwards to the S3 server; answers 503 to the first `failures` GETs of each .tar object,
    like an overloaded store."""

    def __init__(self, upstream: str, failures: int) -> None:
        self.upstream, self.failures = upstream, failures
        self.num_injected, self.lock, self.seen = 0, threading.Lock(), {}
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def _forward(self) -> None:
        server: _FlakyProxy = self.server
        path = self.path.split("?")[0]
        if self.command == "GET" and path.endswith(".tar"):
            with server.lock:
                count = server.seen[path] = server.seen.get(path, 0) + 1
                inject = count <= server.failures
                server.num_injected += inject
            if inject:
                self.send_response(503)
                body = b"<Error><Code>SlowDown</Code><Message>try again</Message></Error>"
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        reply = requests.request(self.command, server.upstream + self.path, data=data,
                                 headers=headers, timeout=30)  # fmt: skip
        self.send_response(reply.status_code)
        for key, value in reply.headers.items():
            if key.lower() not in ("transfer-encoding", "content-encoding", "connection"):
                self.send_header(key, value)
        self.end_headers()
        self.wfile.write(reply.content)

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _forward


def test_transient_5xx_are_retried_and_wrong_endpoint_stops(s3_server, s3_bucket) -> None:
    options = {"endpoint_url": s3_server}
    write_shards(_samples("r", 6), Location(f"s3://{BUCKET}/retry", options), "part", 3)
    proxy = _FlakyProxy(s3_server, failures=2)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        flaky = {"endpoint_url": f"http://127.0.0.1:{proxy.server_address[1]}"}
        retry = Location(f"s3://{BUCKET}/retry", flaky)
        urls = resolve_shard_urls(retry)
        keys = [k for k, _, _, _ in read_samples(urls, on_bad_sample="stop", store=retry)]
    finally:
        proxy.shutdown()
    assert keys == [f"r-{i:04d}" for i in range(6)]
    assert proxy.num_injected == 4  # two 503s for each of the two shards, each retried

    closed_port = free_port()  # nothing listens on it
    wrong = {"endpoint_url": f"http://127.0.0.1:{closed_port}"}
    with pytest.raises(
        OSError, match=f"s3://{BUCKET}/retry \\(endpoint http://127.0.0.1:{closed_port}\\)"
    ):
        resolve_shard_urls(Location(f"s3://{BUCKET}/retry", wrong))


def test_storage_options_refuse_credentials(tmp_path: Path) -> None:
    from simgan_dist.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="data.storage_options.*secret"):
        load_config(preset="debug", overrides=["data.storage_options={secret: abc}"])
    with pytest.raises(SystemExit):
        main(["shards", "stats", str(tmp_path), "--storage-option", "key=abc"])


@pytest.mark.ray
def test_training_with_a_wrong_endpoint_stops_before_it_starts(
    ray_local, debug_overrides, capsys
) -> None:
    closed_port = free_port()
    options = json.dumps({"endpoint_url": f"http://127.0.0.1:{closed_port}"})
    args = ["train", "--preset", "debug"]
    for item in debug_overrides(
        **{"data.synthetic": "s3://nowhere/synth", "data.storage_options": options}
    ):
        args += ["--set", item]
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert f"simgan: error: s3://nowhere/synth (endpoint http://127.0.0.1:{closed_port})" in err
