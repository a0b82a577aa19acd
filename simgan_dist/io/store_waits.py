"""Bounded waits on an object store: default connect/read timeouts and tries for every S3 filesystem.

Unbounded, a silent endpoint (one that accepts connections and never answers) held `shards verify`
for 7 min 37 s and train for longer: s3fs tries each request 5 times, botocore each of those 5 times,
each attempt waiting out its read timeout. Here every S3 filesystem gets, unless its
storage_options say otherwise (`config_kwargs: {connect_timeout: S, read_timeout: S, retries:
{total_max_attempts: N}}`, botocore's own spelling):

- connect_timeout 10 s: a reachable endpoint, even across a region, connects in well under 1 s;
- read_timeout 20 s: the longest silence allowed within one answer (not a cap on a whole
  download: a slow store that keeps sending is never cut off);
- 3 tries in botocore ("standard" mode: 5xx, throttling, dropped and timed-out connections, with
  jittered backoff) inside 2 tries in s3fs (which also retries an answer cut mid-body).

So a silent store is given up after about 6 x 20 s = 2 minutes, with one line naming the endpoint
and the timeout (describe_timeout), and a store that fails now and then still gets 6 tries.
"""

from __future__ import annotations

from typing import Any

S3_PROTOCOLS = ("s3", "s3a")
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 20
BOTOCORE_ATTEMPTS = 3
S3FS_ATTEMPTS = 2
TIMEOUT_ERRORS = frozenset(
    ("ReadTimeoutError", "ConnectTimeoutError", "TimeoutError", "FSTimeoutError",
     "ServerTimeoutError", "ConnectionTimeoutError", "SocketTimeoutError")
)  # fmt: skip


def bounded_options(protocol: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """storage_options with the default timeouts and tries filled in for S3 (others unchanged);
    a value the options give wins."""
    options = dict(storage_options or {})
    if protocol not in S3_PROTOCOLS:
        return options
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    config.setdefault("read_timeout", READ_TIMEOUT_S)
    retries = dict(config.get("retries") or {})
    if "total_max_attempts" not in retries and "max_attempts" not in retries:
        retries["total_max_attempts"] = BOTOCORE_ATTEMPTS
    retries.setdefault("mode", "standard")
    config["retries"] = retries
    options["config_kwargs"] = config
    return options


def bound_filesystem(protocol: str, fs: Any) -> Any:
    """Cap s3fs's own tries (a class attribute, 5 by default, not a constructor option)."""
    if protocol in S3_PROTOCOLS:
        fs.retries = S3FS_ATTEMPTS
    return fs


def is_timeout(err: BaseException) -> bool:
    """A connect or read timeout from botocore, aiohttp or asyncio (by name: io never imports
    botocore, and s3fs may wrap the cause)."""
    return any(type(e).__name__ in TIMEOUT_ERRORS for e in _chain(err))


def describe_timeout(storage_options: dict[str, Any] | None, protocol: str) -> str:
    """' (no answer within ...)': what was waited for, and the setting that changes it (the S3
    bounds set here; another store's own)."""
    if protocol not in S3_PROTOCOLS:
        return " (no answer in time: the store's own timeout ran out)"
    config = bounded_options(protocol, storage_options)["config_kwargs"]
    retries = config["retries"]
    botocore_tries = retries.get("total_max_attempts") or retries.get("max_attempts", 1)
    return (
        f" (no answer within connect_timeout {config['connect_timeout']} s / read_timeout "
        f"{config['read_timeout']} s, {botocore_tries * S3FS_ATTEMPTS} tries; set in "
        "storage_options config_kwargs)"
    )


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in seen and len(seen) < 16:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
