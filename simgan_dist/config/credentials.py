"""Secrets kept out of configs: credential-named keys and URL user info, found by rule, never shown.

Credentials come from the standard AWS/gcloud/fsspec chain only (environment, config files,
instance roles). A config, a `--set` or a `--storage-option` that carries one would put it into
`config.yaml`, `--print-config` output and log lines, so it is refused, and the refusal names
where it is (the dotted key), never what it is. Plain Python, apart from fsspec, so config stays
light to import.
"""

from __future__ import annotations

import re
from typing import Any

from simgan_dist.errors import InputError

# A key whose name contains one of these (any case) holds a secret, whatever the store calls it:
# s3fs `key`/`secret`/`token`, botocore `aws_secret_access_key`, Azure `account_key`,
# `sas_token`, `connection_string`, `client_secret`, gcsfs `token`, `password`, `credentials`.
# The fsspec options a config needs (`endpoint_url`, `anon`, `client_kwargs`, `config_kwargs`,
# `use_ssl`, `requester_pays`, `region_name`, timeouts, retries) contain none of them.
SECRET_WORDS = ("secret", "key", "token", "password", "credential", "connection_string")
# A URL's user info (scheme://user[:password]@host) is looked for in this many characters after
# each "://", and never past the next "://", so a scan costs one pass over the text.
MAX_USERINFO = 1024
_NOT_BLANK = re.compile(r"\S*")
# A config's mappings are small; a scan that meets more values than this is refused instead of
# walking on (a shared or cyclic structure built in Python would never end).
MAX_SCANNED_VALUES = 100_000
NO_USERINFO = (
    "a URL may not carry a user name or password (user:password@host): credentials come from "
    "the AWS/gcloud environment and config files"
)


def is_secret_name(key: Any) -> bool:
    """True for a key whose name says it holds a credential (SECRET_WORDS, any case)."""
    name = str(key).lower()
    return any(word in name for word in SECRET_WORDS)


def _userinfo_ends(text: str) -> list[tuple[int, int]]:
    """(start, end) of each URL's user info in text: from after '://' to its '@', inclusive.
    A password may hold '/' (AWS secret keys do) or an unescaped '@', so after 'user:' it runs
    to the last '@' before a blank; a plain 'user@' must come before the path."""
    spans = []
    start = text.find("://")
    while start != -1:
        following = text.find("://", start + 3)
        stop = min(len(text) if following == -1 else following, start + 3 + MAX_USERINFO)
        window = _NOT_BLANK.match(text, start + 3, stop).group(0)  # type: ignore[union-attr]
        authority = window
        for mark in "/?#":
            authority = authority.split(mark, 1)[0]
        at = window.rfind("@") if ":" in authority else authority.rfind("@")
        if at != -1:
            spans.append((start + 3, start + 3 + at + 1))
        start = following
    return spans


def has_userinfo(text: str) -> bool:
    """True when text holds a URL with user info (s3://KEY:SECRET@bucket, http://u:p@host)."""
    return "@" in text and "://" in text and bool(_userinfo_ends(text))


def redact_userinfo(text: str) -> str:
    """text with every URL's user info replaced by '***@' (for messages that show a value)."""
    if "@" not in text or "://" not in text:
        return text
    for begin, end in reversed(_userinfo_ends(text)):
        text = text[:begin] + "***@" + text[end:]
    return text


def _label(key: Any) -> str:
    # A key is shown in the refusal; a huge one is cut (it is a name, not the secret).
    text = str(key)
    return text if len(text) <= 40 else text[:37] + "..."


def secret_paths(value: Any, *, names: bool = True) -> list[str]:
    """Dotted paths, at any depth, of credential-named keys (when names) and of strings holding
    a URL with user info. Iterative, and bounded by MAX_SCANNED_VALUES."""
    found: list[str] = []
    stack: list[tuple[Any, str]] = [(value, "")]
    scanned = 0
    while stack:
        item, path = stack.pop()
        scanned += 1
        if scanned > MAX_SCANNED_VALUES:
            raise InputError(f"more than {MAX_SCANNED_VALUES} values to check: too large")
        if isinstance(item, str):
            if has_userinfo(item):
                found.append(path or "(the value)")
        elif isinstance(item, dict):
            for key, inner in item.items():
                inner_path = f"{path}{_label(key)}"
                if names and is_secret_name(key):
                    found.append(inner_path)
                else:
                    stack.append((inner, inner_path + "."))
        elif isinstance(item, (list, tuple)):
            stack.extend((inner, f"{path}{i}.") for i, inner in enumerate(item))
    return sorted(p.rstrip(".") for p in found)


def check_storage_options(options: dict[str, Any]) -> None:
    """Refuse credentials in storage options, at any depth (s3fs passes client_kwargs and
    config_kwargs on to botocore): credential-named keys and URLs with user info. The message
    names the keys, never their values."""
    secret = secret_paths(options)
    if secret:
        raise InputError(
            f"storage_options may not hold credentials ({', '.join(secret[:5])}): no key named "
            f"with {', '.join(SECRET_WORDS[:-1])} or {SECRET_WORDS[-1]}, no URL with "
            "user:password@; use the AWS/gcloud environment or config files"
        )


def check_no_userinfo(value: Any, name: str) -> None:
    """Refuse a value (a string, or strings at any depth) that holds a URL with user info,
    naming the field (and the key inside it), never the value."""
    try:
        paths = secret_paths(value, names=False)
    except ValueError as err:
        raise InputError(f"{name}: {err}") from None
    if paths:
        where = name if paths == ["(the value)"] else f"{name}.{paths[0]}"
        raise InputError(f"{where}: {NO_USERINFO}")
