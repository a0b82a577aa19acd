"""Run storage (runs, checkpoints, Tune experiments) on the same fsspec layer as the shards.

A location is a local path or an fsspec URI (`s3://bucket/runs`); an S3-compatible endpoint and
other settings are fsspec `storage_options` (`{"endpoint_url": "http://127.0.0.1:9000"}`), given
once for the whole config or per section, exactly as for shards. Ray Train and Tune get the same
filesystem wrapped for pyarrow (`PyFileSystem(FSSpecHandler(fs))`), so they and this module always
agree on where a run lives. Credentials come from the standard AWS/gcloud chain and are never logged.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from simgan_dist.io import urls


def list_names(location: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Names directly under a location (empty when it does not exist)."""
    fs, path = urls.filesystem(location, storage_options)
    try:
        entries = fs.ls(path, detail=False, refresh=True)
    except FileNotFoundError:
        return []
    except Exception as err:  # botocore/aiohttp errors: one line with URL and endpoint
        raise OSError(urls.describe_failure(location, err, storage_options)) from err
    return sorted({str(entry).rstrip("/").rsplit("/", 1)[-1] for entry in entries})


def read_text(location: str, storage_options: dict[str, Any] | None = None) -> str:
    return urls.read_bytes(location, storage_options).decode()


def write_text(location: str, text: str, storage_options: dict[str, Any] | None = None) -> None:
    """Write a small file whole: a reader sees the old or the new text, never a part."""
    with urls.atomic_write(location, storage_options) as f:
        f.write(text.encode())


def pyarrow_filesystem(
    location: str, storage_options: dict[str, Any] | None = None
) -> tuple[Any, str]:
    """(pyarrow filesystem or None for local, path) for Ray Train's and Tune's RunConfig."""
    if urls.is_local(location):
        return None, str(urls.local_path(location).resolve())
    import pyarrow.fs

    fs, path = urls.filesystem(location, storage_options)
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), path


def fetch_dir(
    location: str, local_dir: Path, storage_options: dict[str, Any] | None = None
) -> Path:
    """A local copy of a directory (the directory itself when it is already local)."""
    if urls.is_local(location):
        return urls.local_path(location)
    fs, path = urls.filesystem(location, storage_options)
    if local_dir.exists():
        shutil.rmtree(local_dir)
    local_dir.mkdir(parents=True)
    fs.get(path.rstrip("/") + "/", str(local_dir), recursive=True)
    return local_dir


def upload_dir(
    local_dir: Path,
    location: str,
    names: list[str],
    storage_options: dict[str, Any] | None = None,
    uploaded: dict[str, tuple[int, int]] | None = None,
) -> int:
    """Copy the given files and folders of local_dir to location; returns the files copied.
    uploaded: (size, mtime) of what an earlier call copied, so unchanged files are not sent
    again (updated in place)."""
    fs, path = urls.filesystem(location, storage_options)
    seen = {} if uploaded is None else uploaded
    files = []
    for name in names:
        source = local_dir / name
        files += sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else []
        files += [source] if source.is_file() else []
    num_copied = 0
    for file in files:
        relative = file.relative_to(local_dir).as_posix()
        stat = file.stat()
        if seen.get(relative) == (stat.st_size, stat.st_mtime_ns):
            continue
        try:
            fs.put_file(str(file), f"{path}/{relative}")
        except Exception as err:  # botocore/aiohttp errors: one line with URL and endpoint
            target = urls.join(location, relative)
            raise OSError(urls.describe_failure(target, err, storage_options)) from err
        seen[relative] = (stat.st_size, stat.st_mtime_ns)
        num_copied += 1
    return num_copied


def fetch_cached(location: str, storage_options: dict[str, Any] | None = None) -> Path:
    """A local copy of a directory on a store, under the temp dir: one cache entry per store
    and path, since two endpoints may hold the same bucket name."""
    endpoint = str((storage_options or {}).get("endpoint_url", ""))
    digest = hashlib.sha256(f"{endpoint} {location}".encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / "simgan-checkpoints" / digest
    return fetch_dir(location, cache / urls.split(location)[1], storage_options)
