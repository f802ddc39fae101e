"""Provider API keys encrypted at rest: Fernet (AES-128-CBC + HMAC-SHA256) from ``cryptography``.

Keys come from ``GATEWAY_ENCRYPTION_KEYS``: comma-separated Fernet keys, the first
encrypts, every one decrypts (``MultiFernet``), so a key can be rotated without a
moment where stored values cannot be read:

1. ``python manage.py provider_keys generate`` prints a new key;
2. put it first: ``GATEWAY_ENCRYPTION_KEYS=<new>,<old>`` and restart every process;
3. ``python manage.py provider_keys rotate`` re-encrypts every stored key with it;
4. ``python manage.py provider_keys status`` shows none left on the old key; drop it.

When the variable is unset, one key is derived from ``SECRET_KEY`` (HKDF-SHA256 with
a label of its own, so the derived key reveals nothing about ``SECRET_KEY`` and is used
for nothing else). Every installation then encrypts with no extra setting, the
embedded default included (its ``SECRET_KEY`` is generated once into ``var/``), and
Compose requires ``SECRET_KEY`` already. The price is that rotating ``SECRET_KEY``
would make the stored keys unreadable: production sets ``GATEWAY_ENCRYPTION_KEYS``
(``provider_keys derived-key`` prints the derived key, to keep as the last entry
until ``rotate`` has run). docs/configuration.md has the whole procedure.

A value that none of the keys decrypts raises ``UndecryptableSecret`` when it is
read: loud, like a wrong ``KEY_PEPPER``, rather than calling a provider with no key.
"""

from __future__ import annotations

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

_DERIVATION_LABEL = b"llm-gateway provider api keys v1"


class UndecryptableSecret(ImproperlyConfigured):
    pass


def derived_key(secret_key: str) -> str:
    """The Fernet key derived from ``SECRET_KEY`` (used when ``GATEWAY_ENCRYPTION_KEYS`` is unset)."""
    material = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_DERIVATION_LABEL).derive(secret_key.encode())
    return base64.urlsafe_b64encode(material).decode()


def configured_keys() -> tuple[str, ...]:
    keys = tuple(settings.GATEWAY_ENCRYPTION_KEYS)
    return keys or (derived_key(settings.SECRET_KEY),)


@lru_cache(maxsize=8)
def _fernets(keys: tuple[str, ...]) -> tuple[Fernet, ...]:
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key))
        except ValueError:
            raise ImproperlyConfigured(
                f"GATEWAY_ENCRYPTION_KEYS: entry {position} is not a Fernet key (32 url-safe base64-encoded "
                "bytes); generate one with `python manage.py provider_keys generate`"
            ) from None
    return tuple(fernets)


def fernets() -> tuple[Fernet, ...]:
    """One ``Fernet`` per configured key, the encrypting one first."""
    return _fernets(configured_keys())


def encrypt(plain: str) -> str:
    return fernets()[0].encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return MultiFernet(list(fernets())).decrypt(token.encode()).decode()
    except InvalidToken:
        raise UndecryptableSecret(
            "A stored provider API key cannot be decrypted with GATEWAY_ENCRYPTION_KEYS (or, when unset, the "
            "key derived from SECRET_KEY). Was a key removed from the list, or SECRET_KEY changed, before "
            "`manage.py provider_keys rotate` re-encrypted the stored keys?"
        ) from None


def key_index(token: str) -> int | None:
    """Which configured key (0 = the encrypting one) decrypts ``token``; None when none does."""
    for index, fernet in enumerate(fernets()):
        try:
            fernet.decrypt(token.encode())
        except InvalidToken:
            continue
        return index
    return None


def generate_key() -> str:
    return Fernet.generate_key().decode()
