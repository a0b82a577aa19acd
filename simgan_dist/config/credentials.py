"""The storage-option credential check, apart from fsspec so config stays light to import."""

from __future__ import annotations

from typing import Any

# fsspec/s3fs/gcsfs keyword arguments that carry secrets; they belong in the credential chain.
CREDENTIAL_KEYS = frozenset(
    {"key", "secret", "token", "password", "aws_access_key_id", "aws_secret_access_key",
     "aws_session_token", "access_key", "secret_key", "session_token", "credentials"}
)  # fmt: skip


def check_storage_options(options: dict[str, Any]) -> None:
    """Refuse credentials in storage options: they would end up in configs and logs."""
    secret = sorted(CREDENTIAL_KEYS.intersection(options))
    if secret:
        raise ValueError(
            f"storage_options may not hold credentials ({', '.join(secret)}): use the AWS/gcloud "
            "environment or config files"
        )
