"""Hostile shards (issue 18, item 9): keys that would escape a folder or clash, and list-valued
annotations, are problems for `shards verify` and bad samples for every reader."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from simgan_dist.data.check import verify_shards
from simgan_dist.data.reader import BadSampleError, read_samples
from simgan_dist.io.shardio import Manifest, ShardInfo, check_key, encode_png, write_manifest

PNG = encode_png(np.zeros((28, 28), dtype=np.uint8))


def _hostile_corpus(root: Path) -> Path:
    members = [
        ("good.png", PNG), ("good.json", b'{"label": 1}'),
        ("../../evil.png", PNG), ("../../evil.json", b'{"label": 2}'),
        ("/tmp/abs_evil.png", PNG), ("/tmp/abs_evil.json", b'{"label": 3}'),
        ("listy.png", PNG), ("listy.json", b"[1, 2]"),
        ("other.png", PNG), ("other.json", b'{"label": 4}'),
        ("good.png", PNG), ("good.json", b'{"label": 5}'),  # the first key again, later
    ]  # fmt: skip
    root.mkdir()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    (root / "hostile-000000.tar").write_bytes(data)
    info = ShardInfo("hostile-000000.tar", 6, hashlib.sha256(data).hexdigest(), len(data))
    write_manifest(root, Manifest("hostile", (info,), (1, 28, 28), True))
    return root


def test_verify_reports_every_hostile_sample(tmp_path) -> None:
    problems = "\n".join(verify_shards(str(_hostile_corpus(tmp_path / "c"))))
    assert "sample ../../evil: " in problems and "bad sample key" in problems
    assert "sample /tmp/abs_evil: " in problems
    assert "sample listy: " in problems and "not an object" in problems
    assert "duplicate key 'good'" in problems
    assert "sample other:" not in problems


def test_readers_skip_and_count_them_or_stop(tmp_path) -> None:
    corpus = _hostile_corpus(tmp_path / "c")
    urls = [str(corpus / "hostile-000000.tar")]
    keys = [key for key, _, _, _ in read_samples(urls)]
    assert "../../evil" not in keys and "/tmp/abs_evil" not in keys and "listy" not in keys
    with pytest.raises(BadSampleError, match="evil"):
        list(read_samples(urls, on_bad_sample="stop"))


@pytest.mark.parametrize("key", ["", "a.b", "a b", "../x", "/abs", "__meta__"])
def test_check_key_refuses(key: str) -> None:
    with pytest.raises(ValueError, match="bad sample key"):
        check_key(key)


def test_check_key_allows_a_folder_prefix() -> None:
    check_key("train/000123")
