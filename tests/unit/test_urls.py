"""urls.nested: the overlap check that keeps refine from writing over its own input."""

from __future__ import annotations

from simgan_dist.io import urls
from simgan_dist.io.urls import nested


def test_nested_local_paths(tmp_path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    assert nested(str(corpus), str(corpus))
    assert nested(str(corpus), str(corpus / "refined"))  # output inside the input
    assert nested(str(corpus / "sub"), str(corpus))  # input inside the output
    assert nested(str(corpus), f"{tmp_path}/other/../corpus/")  # spelled differently
    assert nested(str(corpus), f"file://{corpus}")
    assert not nested(str(corpus), str(tmp_path / "corpus-refined"))  # a sibling, same prefix


def test_nested_remote_locations() -> None:
    assert nested("s3://bucket/synth", "s3://bucket/synth/")
    assert nested("s3://bucket/synth", "s3://bucket/synth/refined")
    assert not nested("s3://bucket/synth", "s3://bucket/synth-refined")
    assert not nested("s3://bucket/synth", "gs://bucket/synth")
    assert not nested("s3://bucket/synth", "/bucket/synth")


def test_absolute_fixes_plain_paths_only(tmp_path, monkeypatch) -> None:
    """Ray actors do not share the driver's working directory: relative paths are made absolute
    in the driver; URLs (s3://, file://, pipe:) pass unchanged."""
    monkeypatch.chdir(tmp_path)
    assert urls.absolute("shards/a.tar") == str(tmp_path / "shards" / "a.tar")
    for location in ("s3://bucket/a.tar", "file:///data/a.tar", "pipe:cat a.tar"):
        assert urls.absolute(location) == location
