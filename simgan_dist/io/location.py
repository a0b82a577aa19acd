"""Location: a local path or fsspec URL with the storage options that reach its store, as one value."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from simgan_dist.config.credentials import redact_userinfo
from simgan_dist.errors import InputError
from simgan_dist.io import urls

# One PUT shows the whole object or nothing on these stores (publish_bytes).
SINGLE_PUT_PROTOCOLS = ("s3", "s3a", "gs", "gcs")


@dataclass(frozen=True)
class Location:
    """A place to read or write: `url` (a local path, file://, s3://, gs://... as in urls.py) and
    `options`, the fsspec options of its store (endpoint_url, config_kwargs; never credentials,
    which the config refuses). Immutable and picklable, so it travels to Ray workers as is.

    Its str and repr show the URL only (user info redacted), never the options; a store's
    failure is one OSError naming the URL and the endpoint (urls.describe_failure).
    """

    url: str
    options: Mapping[str, Any] = field(default_factory=dict, repr=False, hash=False)

    @classmethod
    def of(cls, where: Location | str | Path, options: Mapping[str, Any] | None = None) -> Location:
        """A Location as is; a plain path or URL as one with these options (none by default:
        local paths need none)."""
        if not isinstance(where, Location):
            return cls(str(where), dict(options or {}))
        if options:
            raise InputError(f"{where}: give its storage options in the Location, not beside it")
        return where

    def __str__(self) -> str:
        return redact_userinfo(self.url)

    def __repr__(self) -> str:
        return f"Location({redact_userinfo(self.url)!r})"

    # -- names ----------------------------------------------------------------------------------

    def at(self, url: str | Path) -> Location:
        """Another URL on the same store (same options), e.g. one shard of a corpus."""
        return Location(str(url), self.options)

    def join(self, *names: str) -> Location:
        url = self.url
        for name in names:
            url = urls.join(url, name)
        return self.at(url)

    @property
    def parent(self) -> Location:
        return self.at(urls.split(self.url)[0])

    @property
    def name(self) -> str:
        return urls.basename(self.url)

    @property
    def protocol(self) -> str:
        return urls.protocol(self.url)

    @property
    def is_local(self) -> bool:
        return urls.is_local(self.url)

    def local_path(self) -> Path:
        """The filesystem path of a local location (InputError for a remote one)."""
        return urls.local_path(self.url)

    def absolute(self) -> Location:
        """A plain local path made absolute (Ray workers do not share the driver's directory)."""
        return self.at(urls.absolute(self.url))

    def endpoint(self) -> str:
        """The store's endpoint_url option, or '' (part of cache keys: two endpoints may hold the
        same bucket name)."""
        return str(self.options.get("endpoint_url", ""))

    # -- the store --------------------------------------------------------------------------------

    def filesystem(self) -> tuple[Any, str]:
        """(fsspec filesystem, path inside it); made at each call (s3fs is not fork-safe)."""
        return urls.filesystem(self.url, dict(self.options))

    def error(self, err: BaseException) -> OSError:
        """A store's failure as one line: URL, endpoint (no credentials) and cause."""
        return OSError(self.describe_failure(err))

    def describe_failure(self, err: BaseException) -> str:
        return urls.describe_failure(self.url, err, dict(self.options))

    def open(self, mode: str = "rb") -> IO:
        """Open for reading or writing bytes."""
        fs, path = self.filesystem()
        try:
            return fs.open(path, mode)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self}: not found") from None
        except Exception as err:  # botocore/aiohttp errors: one line with URL and endpoint
            raise self.error(err) from err

    def read_bytes(self) -> bytes:
        """The whole object in one request (no size lookup first, no file object)."""
        fs, path = self.filesystem()
        try:
            return fs.cat_file(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self}: not found") from None
        except Exception as err:  # botocore/aiohttp errors: one line with URL and endpoint
            raise self.error(err) from err

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def write_text(self, text: str) -> None:
        """Write a small file whole: a reader sees the old or the new text, never a part."""
        with self.atomic_write() as f:
            f.write(text.encode())

    @contextlib.contextmanager
    def atomic_write(self) -> Iterator[IO]:
        """Write to a temporary name, then publish under this URL only when the block completes.

        Local: rename in the same directory. Object stores: upload a temporary key, then a
        server-side move (an S3 object appears whole or not at all). On error the temporary is
        removed, so a crash never leaves a partial object under the final name.
        """
        fs, path = self.filesystem()
        parent = path.rsplit("/", 1)[0]
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            if self.is_local:
                fs.makedirs(parent, exist_ok=True)
            with fs.open(tmp, "wb") as f:
                yield f
            if self.is_local:
                os.replace(tmp, path)
            else:
                fs.mv(tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                fs.rm(tmp)
            raise

    def publish_bytes(self, data: bytes) -> None:
        """atomic_write for a payload already in memory: on S3 and GCS one PUT, which is atomic
        already (a quarter of atomic_write's requests: no temporary, copy and delete)."""
        if self.protocol in SINGLE_PUT_PROTOCOLS:
            fs, path = self.filesystem()
            fs.pipe_file(path, data)
            return
        with self.atomic_write() as f:
            f.write(data)

    def exists(self) -> bool:
        fs, path = self.filesystem()
        return fs.exists(path)

    def list(self) -> list[str]:
        """Names directly under this location, sorted (empty when it does not exist)."""
        fs, path = self.filesystem()
        try:
            entries = fs.ls(path, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        except Exception as err:  # botocore/aiohttp errors: one line with URL and endpoint
            raise self.error(err) from err
        return sorted({str(entry).rstrip("/").rsplit("/", 1)[-1] for entry in entries})

    # -- whole folders ----------------------------------------------------------------------------

    def pyarrow_filesystem(self) -> tuple[Any, str]:
        """(pyarrow filesystem or None for local, path) for Ray Train's and Tune's RunConfig:
        fsspec's filesystem with this location's options, wrapped for pyarrow, so Ray and this
        module always agree on where a run lives."""
        if self.is_local:
            return None, str(self.local_path().resolve())
        import pyarrow.fs

        fs, path = self.filesystem()
        return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), path

    def fetch_dir(self, local_dir: Path) -> Path:
        """A local copy of this directory (the directory itself when it is already local)."""
        if self.is_local:
            return self.local_path()
        fs, path = self.filesystem()
        if local_dir.exists():
            shutil.rmtree(local_dir)
        local_dir.mkdir(parents=True)
        fs.get(path.rstrip("/") + "/", str(local_dir), recursive=True)
        return local_dir

    def fetch_cached(self) -> Path:
        """A local copy of this directory on a store, under the temp dir: one cache entry per
        store and path, since two endpoints may hold the same bucket name."""
        digest = hashlib.sha256(f"{self.endpoint()} {self.url}".encode()).hexdigest()[:16]
        cache = Path(tempfile.gettempdir()) / "simgan-checkpoints" / digest
        return self.fetch_dir(cache / self.name)

    def upload_dir(
        self,
        local_dir: Path,
        names: Sequence[str],
        uploaded: dict[str, tuple[int, int]] | None = None,
    ) -> int:
        """Copy the given files and folders of local_dir here; returns the files copied.
        uploaded: (size, mtime) of what an earlier call copied, so unchanged files are not sent
        again (updated in place)."""
        fs, path = self.filesystem()
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
                raise self.join(relative).error(err) from err
            seen[relative] = (stat.st_size, stat.st_mtime_ns)
            num_copied += 1
        return num_copied


def on_store(url: str, store: Location | None) -> Location:
    """A URL with the options of store (the corpus or folder it was found in); none without."""
    return Location(url) if store is None else store.at(url)


def prefetch(shards: Sequence[Location]) -> Iterator[bytes | BaseException | None]:
    """For each shard in order: its bytes, downloaded one shard ahead in a thread, or the error
    that stopped the download; None for local files (the OS reads ahead on its own).

    Hides an object store's latency behind decoding the current shard. Costs memory for two
    shards per reader (keep shards at a few hundred MB at most).
    """
    from concurrent.futures import ThreadPoolExecutor

    def fetch(shard: Location) -> bytes | BaseException | None:
        if shard.is_local:
            return None
        try:
            return shard.read_bytes()
        except Exception as err:  # handed to the reader, which reports it with the URL
            return err

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-prefetch")
    try:
        pending = pool.submit(fetch, shards[0]) if shards else None
        for i in range(len(shards)):
            current = pending
            assert current is not None  # submitted for every i < len(shards)
            pending = pool.submit(fetch, shards[i + 1]) if i + 1 < len(shards) else None
            yield current.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _open_for_webdataset(url: str, mode: str = "rb", bufsize: int = 8192, **kw: Any) -> IO:
    return Location(url, kw.get("storage_options") or {}).open(mode)


def register_gopen_schemes() -> None:
    """Let webdataset.gopen (and so wds.WebDataset) open object-store URLs through fsspec, with
    settings from the standard environment. WebDataset 1.0.2 has no s3:// handler of its own.
    Called where shards are opened (shardio.iter_tar_samples), not at import; idempotent."""
    import webdataset  # torch-heavy: only where shards are read

    for scheme in ("s3", "s3a", "gs", "gcs", "az", "abfs", "hf", "memory"):
        webdataset.gopen_schemes.setdefault(scheme, _open_for_webdataset)
