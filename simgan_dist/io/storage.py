"""Run storage (runs, checkpoints, Tune experiments) on the same fsspec layer as the shards.

A Location (location.py) is a local path or an fsspec URI (`s3://bucket/runs`) with the fsspec
options of its store (`{"endpoint_url": "http://127.0.0.1:9000"}`: the config's storage_options,
given once for the whole config or per section, exactly as for shards). Ray Train and Tune get the same
filesystem wrapped for pyarrow (`PyFileSystem(FSSpecHandler(fs))`), so they and this module always
agree on where a run lives. Credentials come from the standard AWS/gcloud chain and are never logged.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from simgan_dist.io.location import Location


def pyarrow_filesystem(location: Location) -> tuple[Any, str]:
    """(pyarrow filesystem or None for local, path) for Ray Train's and Tune's RunConfig."""
    if location.is_local:
        return None, str(location.local_path().resolve())
    import pyarrow.fs

    fs, path = location.filesystem()
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), path


def fetch_dir(location: Location, local_dir: Path) -> Path:
    """A local copy of a directory (the directory itself when it is already local)."""
    if location.is_local:
        return location.local_path()
    fs, path = location.filesystem()
    if local_dir.exists():
        shutil.rmtree(local_dir)
    local_dir.mkdir(parents=True)
    fs.get(path.rstrip("/") + "/", str(local_dir), recursive=True)
    return local_dir


def upload_dir(
    local_dir: Path,
    location: Location,
    names: list[str],
    uploaded: dict[str, tuple[int, int]] | None = None,
) -> int:
    """Copy the given files and folders of local_dir to location; returns the files copied.
    uploaded: (size, mtime) of what an earlier call copied, so unchanged files are not sent
    again (updated in place)."""
    fs, path = location.filesystem()
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
            raise location.join(relative).error(err) from err
        seen[relative] = (stat.st_size, stat.st_mtime_ns)
        num_copied += 1
    return num_copied


def fetch_cached(location: Location) -> Path:
    """A local copy of a directory on a store, under the temp dir: one cache entry per store
    and path, since two endpoints may hold the same bucket name."""
    digest = hashlib.sha256(f"{location.endpoint()} {location.url}".encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / "simgan-checkpoints" / digest
    return fetch_dir(location, cache / location.name)
