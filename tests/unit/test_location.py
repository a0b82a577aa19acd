"""Location: a URL and its store's options as one immutable, picklable value that never shows them."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from simgan_dist.errors import InputError
from simgan_dist.io.location import Location

ENDPOINT = {"endpoint_url": "http://127.0.0.1:9000", "config_kwargs": {"read_timeout": 5}}


def test_str_and_repr_show_the_url_never_the_options_nor_user_info() -> None:
    location = Location("s3://bucket/runs", ENDPOINT)
    assert str(location) == "s3://bucket/runs"
    assert repr(location) == "Location('s3://bucket/runs')"
    assert "9000" not in repr(location) and "read_timeout" not in f"{location!r}{location}"
    leaked = Location("s3://AKIAEXAMPLE:wJalrXUtn/K7MDENG@bucket/x")
    assert "AKIAEXAMPLE" not in str(leaked) and "wJalr" not in repr(leaked)
    assert str(leaked) == "s3://***@bucket/x"


def test_pickles_and_compares_by_url_and_options() -> None:
    location = Location("s3://bucket/runs", ENDPOINT)
    again = pickle.loads(pickle.dumps(location))
    assert again == location and again.options == ENDPOINT
    assert hash(again) == hash(location)
    assert Location("s3://bucket/runs") != location
    with pytest.raises(AttributeError):
        location.url = "s3://other"  # type: ignore[misc]


def test_names_keep_the_store_options() -> None:
    run = Location("s3://bucket/runs/", ENDPOINT).join("run-1", "checkpoint-000000000001")
    assert run.url == "s3://bucket/runs/run-1/checkpoint-000000000001"
    assert run.options == ENDPOINT and run.parent.options == ENDPOINT
    assert run.name == "checkpoint-000000000001"
    assert run.parent.url == "s3://bucket/runs/run-1"
    assert run.at("s3://bucket/other.tar") == Location("s3://bucket/other.tar", ENDPOINT)
    assert not run.is_local and run.protocol == "s3" and run.endpoint() == ENDPOINT["endpoint_url"]
    assert run.absolute() == run  # URLs stay as they are


def test_of_takes_a_path_or_a_location(tmp_path: Path) -> None:
    assert Location.of(tmp_path) == Location(str(tmp_path))
    assert Location.of("s3://b/x", ENDPOINT).options == ENDPOINT
    location = Location("s3://b/x", ENDPOINT)
    assert Location.of(location) is location
    with pytest.raises(InputError, match="s3://b/x: give its storage options in the Location"):
        Location.of(location, {"anon": True})


def test_local_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = Location(str(tmp_path / "folder"))
    assert folder.is_local and folder.local_path() == tmp_path / "folder"
    assert not folder.exists() and folder.list() == []
    folder.join("a.txt").write_text("one")
    with folder.join("sub", "b.bin").atomic_write() as f:
        f.write(b"two")
    folder.join("c.bin").publish_bytes(b"three")
    assert folder.list() == ["a.txt", "c.bin", "sub"]  # no temporary left behind
    assert folder.join("a.txt").read_text() == "one"
    with folder.join("sub", "b.bin").open() as f:
        assert f.read() == b"two"
    assert folder.join("c.bin").read_bytes() == b"three"
    with pytest.raises(FileNotFoundError, match=r"missing\.txt: not found"):
        folder.join("missing.txt").read_bytes()
    monkeypatch.chdir(tmp_path)
    assert Location("folder").absolute().url == str(tmp_path / "folder")


def test_a_failed_write_publishes_nothing(tmp_path: Path) -> None:
    target = Location(str(tmp_path / "out.bin"))
    with pytest.raises(RuntimeError), target.atomic_write() as f:
        f.write(b"partial")
        raise RuntimeError("writer died")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_a_store_error_is_one_line_naming_url_and_endpoint() -> None:
    location = Location("s3://bucket/x", {"endpoint_url": "http://127.0.0.1:9"})
    message = location.describe_failure(ConnectionError("refused"))
    assert message == "s3://bucket/x (endpoint http://127.0.0.1:9): ConnectionError: refused"
    assert isinstance(location.error(ConnectionError("refused")), OSError)


def test_folders_go_to_a_store_once_and_come_back(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    (staging / "grids").mkdir(parents=True)
    (staging / "metrics.jsonl").write_text("{}\n")
    (staging / "grids" / "a.png").write_bytes(b"png")
    (staging / "not-asked.txt").write_text("x")
    run = Location(f"memory://simgan-test-location/{tmp_path.name}/run")  # fsspec's in-memory store
    uploaded: dict[str, tuple[int, int]] = {}
    assert run.upload_dir(staging, ["metrics.jsonl", "grids"], uploaded) == 2
    assert run.upload_dir(staging, ["metrics.jsonl", "grids"], uploaded) == 0  # unchanged
    assert run.list() == ["grids", "metrics.jsonl"] and not run.is_local
    copy = run.fetch_dir(tmp_path / "copy")
    assert (copy / "grids" / "a.png").read_bytes() == b"png"
    local = Location(str(staging))
    assert local.fetch_dir(tmp_path / "unused") == staging  # local: no copy made
    assert local.pyarrow_filesystem() == (None, str(staging.resolve()))
