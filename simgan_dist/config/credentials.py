"""The storage-option credential check, apart from fsspec so config stays light to import."""

from __future__ import annotations

from typing import Any

# fsspec/s3fs/gcsfs keyword arguments that carry secrets; they belong in the credential chain.
CREDENTIAL_KEYS = frozenset(
    {"key", "secret", "token", "password", "aws_access_key_id", "aws_secret_access_key",
     "aws_session_token", "access_key", "secret_key", "session_token", "credentials"}
)  # fmt: skip


def _credential_paths(value: Any, prefix: str) -> list[str]:
    # Nested mappings count too: s3fs passes client_kwargs / config_kwargs on to botocore.
    if isinstance(value, dict):
        found = []
        for key, inner in value.items():
            path = f"{prefix}{key}"
            if key in CREDENTIAL_KEYS:
                found.append(path)
            found += _credential_paths(inner, path + ".")
        return found
    if isinstance(value, (list, tuple)):
        return [
            p for i, inner in enumerate(value) for p in _credential_paths(inner, f"{prefix}{i}.")
        ]
    return []


def check_storage_options(options: dict[str, Any]) -> None:
    """Refuse credentials in storage options, at any depth: they would end up in configs and
    logs. The message names the keys, never their values."""
    secret = sorted(_credential_paths(options, ""))
    if secret:
        raise ValueError(
            f"storage_options may not hold credentials ({', '.join(secret)}): use the AWS/gcloud "
            "environment or config files"
        )
