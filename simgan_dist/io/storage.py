"""Run storage on a local disk or an object store, addressed the way Ray Train addresses it.

A location is a local path or a URI that pyarrow understands, e.g.
`s3://bucket/runs?endpoint_override=http://127.0.0.1:9000&scheme=http` for an S3-compatible
store. Ray Train writes checkpoints there through pyarrow; this module uses the same filesystem
resolution, so both always agree on where a run lives. Credentials come from the standard AWS
chain (environment, config files, instance roles) and are never logged.

Functions that read take optional fsspec `storage_options` (as shards do, e.g. `{"endpoint_url":
"http://127.0.0.1:9000"}`): given, a plain URI is opened through fsspec, wrapped for pyarrow, so
`refine --checkpoint s3://... --storage-option endpoint_url=...` reaches the same store as its
shards.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pyarrow.fs

from simgan_dist.io import urls


def is_uri(location: str) -> bool:
    return "://" in str(location) and not str(location).startswith("file://")


def join(location: str, name: str) -> str:
    """location/name, keeping a URI's query (endpoint options) at the end."""
    if not is_uri(location):
        return str(Path(location) / name)
    parts = urlsplit(location)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + name))


def split(location: str) -> tuple[str, str]:
    """(parent location, last name): the inverse of join."""
    if not is_uri(location):
        path = Path(location)
        return str(path.parent), path.name
    parts = urlsplit(location)
    parent, _, name = parts.path.rstrip("/").rpartition("/")
    return urlunsplit(parts._replace(path=parent)), name


def resolve(
    location: str, storage_options: dict[str, Any] | None = None
) -> tuple[pyarrow.fs.FileSystem, str]:
    if not is_uri(location):
        return pyarrow.fs.LocalFileSystem(), str(Path(location).resolve())
    if storage_options:
        if urlsplit(location).query:
            raise ValueError(
                f"{location}: give the endpoint once, either in the URI's query or as "
                "storage options, not both"
            )
        fs, path = urls.filesystem(location, storage_options)
        return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), path
    return pyarrow.fs.FileSystem.from_uri(location)


def list_names(location: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Names directly under a location (empty when it does not exist)."""
    fs, path = resolve(location, storage_options)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    return sorted(Path(info.path).name for info in infos)


def exists(location: str) -> bool:
    fs, path = resolve(location)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def read_text(location: str, storage_options: dict[str, Any] | None = None) -> str:
    fs, path = resolve(location, storage_options)
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def write_text(location: str, text: str) -> None:
    fs, path = resolve(location)
    fs.create_dir(str(Path(path).parent), recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def fetch_dir(
    location: str, local_dir: Path, storage_options: dict[str, Any] | None = None
) -> Path:
    """A local copy of a directory (the directory itself when it is already local)."""
    if not is_uri(location):
        return Path(location)
    fs, path = resolve(location, storage_options)
    if local_dir.exists():
        shutil.rmtree(local_dir)
    local_dir.mkdir(parents=True)
    pyarrow.fs.copy_files(
        path,
        str(local_dir),
        source_filesystem=fs,
        destination_filesystem=pyarrow.fs.LocalFileSystem(),
    )
    return local_dir


def fetch_cached(location: str, storage_options: dict[str, Any] | None = None) -> Path:
    """A local copy of a directory on a store, under the temp dir: one cache entry per store
    and path, since two endpoints may hold the same bucket name."""
    endpoint = str((storage_options or {}).get("endpoint_url", ""))
    digest = hashlib.sha256(f"{endpoint} {location}".encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / "simgan-checkpoints" / digest
    return fetch_dir(location, cache / split(location)[1], storage_options)
