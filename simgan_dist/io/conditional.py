"""Conditional writes on S3-compatible stores: create an object only if it is absent, replace it
only if it is unchanged since it was read (If-None-Match / If-Match on one PUT).

AWS S3 (since 2024), MinIO and Ceph RGW honour both headers; the store then decides which of two
racing writers wins, with no wait and no clock. A store that ignores them is detected by
`honours_conditions` (a second create of the same key must fail), so a caller can fall back to
write, wait and read back. Local files and other protocols are not conditional here.
"""

from __future__ import annotations

from typing import Any

from simgan_dist.io.location import Location

CONDITIONAL_PROTOCOLS = ("s3", "s3a")


class ConditionFailed(Exception):
    """The object exists (create) or changed since it was read (replace): another writer won."""


def supported(target: Location) -> bool:
    """Whether writes to target can be conditional (an S3-compatible store)."""
    return target.protocol in CONDITIONAL_PROTOCOLS


def read_tagged(target: Location) -> tuple[bytes, str] | None:
    """(content, ETag) of the object, or None when it is absent. The tag is read first: if the
    object changes in between, the tag is the older one and a put_if with it fails, which is
    the safe side (a decision made on newer content is never written over a newer object)."""
    fs, path = target.filesystem()
    try:
        tag = str(fs.info(path, refresh=True)["ETag"])
        data = target.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        raise
    except Exception as err:  # botocore/aiohttp errors: one line naming URL and endpoint
        raise target.error(err) from err
    return data, tag


def _precondition_failed(err: BaseException) -> bool:
    # s3fs turns a failed If-None-Match into FileExistsError and a failed If-Match into
    # OSError(EINVAL) whose cause carries the store's code.
    if isinstance(err, FileExistsError):
        return True
    response = getattr(err.__cause__, "response", None) or {}
    return response.get("Error", {}).get("Code") == "PreconditionFailed"


def put_if(target: Location, data: bytes, *, tag: str | None) -> str:
    """Write data as one PUT only if the object is absent (tag None) or still has ETag tag;
    return the new ETag. ConditionFailed when another writer got there first; FileNotFoundError
    when a tag is given and the object is gone."""
    fs, path = target.filesystem()
    condition: dict[str, Any] = {"mode": "create"} if tag is None else {"IfMatch": tag}
    try:
        response = fs.pipe_file(path, data, **condition)
    except (FileExistsError, FileNotFoundError, OSError) as err:
        if _precondition_failed(err):
            raise ConditionFailed(str(target)) from err
        if isinstance(err, FileNotFoundError):
            raise
        raise target.error(err) from err
    except Exception as err:
        raise target.error(err) from err
    return str(response["ETag"])


def honours_conditions(target: Location, data: bytes) -> bool:
    """Whether the store refuses a second create of target, which must exist with content data
    (the caller's own object: rewriting it with the same bytes changes nothing it relies on)."""
    try:
        put_if(target, data, tag=None)
    except ConditionFailed:
        return True
    return False
