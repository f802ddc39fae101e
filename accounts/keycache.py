"""Client key authentication from an in-process cache.

Each process knows the set of every issued key's lookup prefix (one query, loaded again
after each configuration change), so a key whose prefix is unknown is refused with no
query at all, and after the same HMAC computation a wrong secret costs: unauthenticated
traffic turns into no database load, and its answer time does not tell which prefixes
exist. A known key's row is read once per process (per configuration version); later
requests check the HMAC against the cached hash without a query.

Any change to keys or teams clears the cache on every process (``gatewaysite/config/changes.py``):
at once in the writing process (and again when its transaction commits), within a poll
interval elsewhere. Writes that bypass Django (raw SQL, another service) bump the
configuration version too, through database triggers (routing migration
``0003_sec_config_triggers``). Expiry is checked against the clock on every request.
A load that started before a clear is not kept (``_generation``): it may hold the state
from before the change.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from accounts.keys import key_prefix, verify_key
from accounts.models import ClientKey
from gatewaysite.api.errors import AuthenticationError
from gatewaysite.clock import now
from gatewaysite.config import changes


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: int
    prefix: str
    name: str
    secret_hash: str
    team_id: int | None
    team: str
    allowed_models: frozenset[str]
    strategy: str
    budget_usd: Decimal | None
    budget_period: str
    team_budget_usd: Decimal | None
    team_budget_period: str
    expires_at: datetime | None
    revoked: bool
    metadata: dict[str, Any]
    budget_when_redis_down: str = "closed"
    team_budget_when_redis_down: str = "closed"
    latency_slo_ms: int | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    team_rpm_limit: int | None = None
    team_tpm_limit: int | None = None
    # Rotation grace: the replaced secret's hash, accepted until this moment.
    previous_secret_hash: str = ""
    previous_secret_expires_at: datetime | None = None

    @property
    def has_rate_limits(self) -> bool:
        return (
            self.rpm_limit is not None
            or self.tpm_limit is not None
            or self.team_rpm_limit is not None
            or self.team_tpm_limit is not None
        )

    def may_use(self, model: str) -> bool:
        return not self.allowed_models or model in self.allowed_models


# Compared against when the prefix is unknown, so that refusal costs one HMAC like a wrong secret.
_NO_HASH = "0" * 64


class KeyCache:
    def __init__(self) -> None:
        self._entries: dict[str, KeyInfo | None] = {}  # prefix -> info (None: deleted since the prefixes loaded)
        self._prefixes: frozenset[str] | None = None
        self._generation = 0
        self._lock = threading.Lock()
        # One load at a time per prefix (and one of the prefix set): when the cache was just
        # cleared, every request in flight misses at once, and each would open a database
        # connection of its own (connections are per greenlet and closed after the request).
        self._flights: dict[str, threading.Lock] = {}

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries = {}
            self._prefixes = None
            self._flights = {}

    def _flight(self, name: str) -> threading.Lock:
        with self._lock:
            lock = self._flights.get(name)
            if lock is None:
                lock = self._flights[name] = threading.Lock()
            return lock

    def _load_prefixes(self) -> frozenset[str]:

        generation = self._generation
        prefixes = frozenset(ClientKey.objects.values_list("prefix", flat=True))
        with self._lock:
            if generation == self._generation:
                self._prefixes = prefixes
        return prefixes

    def _load(self, prefix: str) -> KeyInfo | None:

        row = ClientKey.objects.select_related("team").filter(prefix=prefix).first()
        if row is None:
            return None
        team = row.team
        return KeyInfo(
            id=row.id,
            prefix=row.prefix,
            name=row.name,
            secret_hash=row.secret_hash,
            team_id=row.team_id,
            team=team.name if team else "",
            allowed_models=frozenset(row.allowed_models or ()),
            strategy=row.strategy,
            budget_usd=row.budget_usd,
            budget_period=row.budget_period,
            team_budget_usd=team.budget_usd if team else None,
            team_budget_period=team.budget_period if team else "month",
            expires_at=row.expires_at,
            revoked=row.revoked,
            metadata=dict(row.metadata or {}),
            budget_when_redis_down=row.budget_when_redis_down,
            team_budget_when_redis_down=team.budget_when_redis_down if team else "closed",
            rpm_limit=row.rpm_limit,
            tpm_limit=row.tpm_limit,
            team_rpm_limit=team.rpm_limit if team else None,
            team_tpm_limit=team.tpm_limit if team else None,
            previous_secret_hash=row.previous_secret_hash,
            previous_secret_expires_at=row.previous_secret_expires_at,
            latency_slo_ms=row.latency_slo_ms,
        )

    def lookup(self, prefix: str) -> KeyInfo | None:
        """The key with this prefix; None when there is none (with no query once the prefixes are loaded)."""
        prefixes = self._prefixes
        if prefixes is None:
            with self._flight(""):  # "" is no prefix: the prefix set's own flight
                prefixes = self._prefixes
                if prefixes is None:
                    prefixes = self._load_prefixes()
        if prefix not in prefixes:
            return None
        entries = self._entries
        if prefix in entries:
            return entries[prefix]
        with self._flight(prefix):
            entries = self._entries
            if prefix in entries:  # loaded by the request this one waited for
                return entries[prefix]
            generation = self._generation
            info = self._load(prefix)
            with self._lock:
                if generation == self._generation:
                    self._entries[prefix] = info
        return info

    def authenticate(self, raw_key: str) -> KeyInfo:
        changes.refresh()  # the configuration's poller runs, and a change it saw has cleared this cache
        prefix = key_prefix(raw_key)
        if prefix is None:
            raise AuthenticationError("Incorrect API key provided.")
        info = self.lookup(prefix)
        matches = verify_key(raw_key, info.secret_hash if info is not None else _NO_HASH)
        if info is None or not (matches or _in_rotation_grace(raw_key, info)):
            raise AuthenticationError("Incorrect API key provided.")
        if info.revoked:
            raise AuthenticationError("This API key has been revoked.", code="key_revoked")
        if info.expires_at is not None and info.expires_at <= now():
            raise AuthenticationError("This API key has expired.", code="key_expired")
        return info


def _in_rotation_grace(raw_key: str, info: KeyInfo) -> bool:
    """The secret a rotation replaced still works until its grace period ends (accounts/services.py)."""
    return (
        bool(info.previous_secret_hash)
        and info.previous_secret_expires_at is not None
        and info.previous_secret_expires_at > now()
        and verify_key(raw_key, info.previous_secret_hash)
    )


key_cache = KeyCache()
changes.on_change(key_cache.clear)


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationError(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("Use 'Authorization: Bearer <key>'.", code="invalid_authorization_header")
    return token.strip()
