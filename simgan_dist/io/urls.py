"""URL strings over fsspec (local paths, file://, s3://, gs://...): names, filesystems, failures.

What reads and writes them is Location (location.py), a URL with the options of its store.

Object-store settings come from the standard chain (AWS environment variables, ~/.aws/config,
instance roles; gcloud's for gs://) plus optional fsspec `storage_options` from the config, e.g.
`{"endpoint_url": "http://127.0.0.1:9000"}` for an S3-compatible store. Credentials are never
accepted from configs and never logged. Filesystems are made where a file is opened, so a loader
process forked from a parent that already used s3fs builds its own (s3fs is not fork-safe).

Transient errors (HTTP 5xx, throttling, dropped connections) are retried with exponential
backoff inside botocore/s3fs (5 attempts each); what still fails is raised as an OSError
naming the URL and the endpoint (describe_failure).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import fsspec

from simgan_dist.config.credentials import redact_userinfo
from simgan_dist.errors import InputError, kind
from simgan_dist.io import store_waits

LOCAL_PROTOCOLS = ("file", "local")


def protocol(url: str) -> str:
    """'s3' for s3://b/k, 'file' for plain paths and file:// URLs."""
    proto, _ = fsspec.core.split_protocol(str(url))
    return proto or "file"


def is_local(url: str) -> bool:
    return protocol(url) in LOCAL_PROTOCOLS


def is_remote(url: str) -> bool:
    """An object store or other non-local fsspec location (s3://, gs://, memory://...)."""
    return not is_local(url)


def local_path(url: str) -> Path:
    """The filesystem path of a local location (plain path or file:// URL)."""
    if not is_local(url):
        raise InputError(f"{url}: not a local path")
    return Path(fsspec.core.strip_protocol(str(url)) if "://" in str(url) else str(url))


def absolute(location: str) -> str:
    """A plain local path made absolute, anything else unchanged: Ray workers and actors do not
    share the driver's working directory, so a relative path would name another place there."""
    if not is_local(location) or "://" in str(location) or str(location).startswith("pipe:"):
        return str(location)
    return str(Path(location).resolve())


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for a location; storage options apply to remote ones."""
    if is_local(url):
        return fsspec.filesystem("file"), str(local_path(url).absolute())
    # Every wait on the store is bounded (store_waits.py): default timeouts and tries.
    proto = protocol(url)
    fs, path = fsspec.core.url_to_fs(
        str(url), **store_waits.bounded_options(proto, storage_options)
    )
    return store_waits.bound_filesystem(proto, fs), path


def to_url(fs: Any, path: str) -> str:
    """Inverse of filesystem(): a plain path for local files, proto://path otherwise."""
    if fs.protocol in LOCAL_PROTOCOLS or "file" in fs.protocol:
        return path
    return fs.unstrip_protocol(path)


def join(location: str, name: str) -> str:
    if is_local(location):
        return str(local_path(location) / name)
    return str(location).rstrip("/") + "/" + name


def split(location: str) -> tuple[str, str]:
    """(parent location, last name): the inverse of join."""
    if is_local(location):
        path = local_path(location)
        return str(path.parent), path.name
    parent, _, name = str(location).rstrip("/").rpartition("/")
    return parent, name


def _tree_key(url: str) -> tuple[str, str]:
    # (protocol, normalized path): local paths resolved (symlinks, ".."), remote ones stripped.
    if is_local(url):
        return "file", str(local_path(url).resolve())
    proto, path = fsspec.core.split_protocol(str(url))
    return str(proto), "/" + path.strip("/")


def nested(a: str, b: str) -> bool:
    """True when locations a and b are the same folder or prefix, or one lies inside the other."""
    (proto_a, path_a), (proto_b, path_b) = _tree_key(a), _tree_key(b)
    if proto_a != proto_b:
        return False
    path_a, path_b = path_a.rstrip("/") + "/", path_b.rstrip("/") + "/"
    return path_a.startswith(path_b) or path_b.startswith(path_a)


def basename(url: str) -> str:
    return str(url).rstrip("/").rsplit("/", 1)[-1]


def describe_failure(url: str, err: BaseException, storage_options: dict[str, Any] | None) -> str:
    """One line for a storage error: URL, endpoint (no credentials), and the cause."""
    endpoint = (storage_options or {}).get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL")
    # AWS_ENDPOINT_URL is not checked like a config's endpoint: a user:secret@ in it stays unsaid.
    where = (
        f" (endpoint {redact_userinfo(str(endpoint))})" if endpoint and not is_local(url) else ""
    )
    # A timeout says what was waited for and which setting changes it.
    timed_out = store_waits.is_timeout(err)
    waited = store_waits.describe_timeout(storage_options, protocol(url)) if timed_out else ""
    return f"{url}{where}: {kind(err)}: {err}{waited}"
