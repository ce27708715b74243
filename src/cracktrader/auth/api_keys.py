"""API keys for programs: `<prefix>.<secret>`, looked up by prefix (unique index) and checked by SHA-256."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

__all__ = [
    "KEY_PREFIX",
    "SCOPES",
    "GeneratedKey",
    "TTLCache",
    "generate_api_key",
    "parse_api_key",
    "secret_matches",
]

KEY_PREFIX = "ct_"
# read: GET endpoints; trade: backtests and paper runs (any state change); live: real-money trading.
SCOPES: tuple[str, ...] = ("read", "trade", "live")
_PREFIX_HEX = 12


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    """A new key: `key` is shown once; only `prefix` and `secret_hash` are stored."""

    key: str
    prefix: str
    secret_hash: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_api_key() -> GeneratedKey:
    """A new random key and what to store for it."""
    prefix = KEY_PREFIX + secrets.token_hex(_PREFIX_HEX // 2)
    secret = secrets.token_urlsafe(32)
    return GeneratedKey(key=f"{prefix}.{secret}", prefix=prefix, secret_hash=_hash(secret))


def parse_api_key(raw: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, else None."""
    prefix, sep, secret = raw.strip().partition(".")
    if not sep or not prefix.startswith(KEY_PREFIX) or len(prefix) != len(KEY_PREFIX) + _PREFIX_HEX:
        return None
    if not 20 <= len(secret) <= 128:
        return None
    return prefix, secret


def secret_matches(secret: str, secret_hash: str) -> bool:
    """Constant-time comparison of a presented secret with the stored hash."""
    return hmac.compare_digest(_hash(secret), secret_hash)


K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """A small bounded cache whose entries expire after `ttl_s` (revocations elsewhere take effect within it)."""

    def __init__(self, *, ttl_s: float, max_size: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_size = max_size
        self._data: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        """The cached value, or None when absent or expired."""
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._data.pop(key, None)
            return None
        return entry[1]

    def put(self, key: K, value: V) -> None:
        """Cache a value; a full cache is emptied (keys are client-controlled, so it must stay bounded)."""
        if len(self._data) >= self.max_size:
            self._data.clear()
        self._data[key] = (time.monotonic() + self.ttl_s, value)

    def pop(self, key: K) -> None:
        """Forget a key (after a revocation or a change)."""
        self._data.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        self._data.clear()


def is_expired(expires_at: datetime | None, now: datetime) -> bool:
    """Whether an optional expiry has passed."""
    return expires_at is not None and expires_at <= now
