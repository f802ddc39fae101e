"""Client key format, generation and verification.

A key looks like ``gwk_<8-char lookup prefix>_<43-char secret>``. The lookup prefix is
stored in clear to find the row; the whole key is stored only as HMAC-SHA256 with the
server-side pepper, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

from django.conf import settings

KEY_MARK = "gwk_"
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
PREFIX_LENGTH = 8


def generate_key() -> tuple[str, str]:
    """Return ``(full_key, lookup_prefix)``."""
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    return f"{KEY_MARK}{prefix}_{secrets.token_urlsafe(32)}", prefix


def generate_secret(prefix: str) -> str:
    """A new full key for an existing lookup prefix (rotation keeps the prefix, so the row is found)."""
    return f"{KEY_MARK}{prefix}_{secrets.token_urlsafe(32)}"


def hash_key(full_key: str) -> str:
    return hmac.new(settings.KEY_PEPPER.encode(), full_key.encode(), hashlib.sha256).hexdigest()


def key_prefix(full_key: str) -> str | None:
    """The lookup prefix of a well-formed key, else None."""
    if not full_key.startswith(KEY_MARK) or len(full_key) < len(KEY_MARK) + PREFIX_LENGTH + 2:
        return None
    prefix = full_key[len(KEY_MARK) : len(KEY_MARK) + PREFIX_LENGTH]
    if full_key[len(KEY_MARK) + PREFIX_LENGTH] != "_":
        return None
    return prefix


def verify_key(full_key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(full_key), stored_hash)
