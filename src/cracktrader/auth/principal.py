"""Who is calling: principals, role scopes, and the cached resolution of access tokens and API keys."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from cracktrader.auth.api_keys import SCOPES, TTLCache, is_expired, parse_api_key, secret_matches
from cracktrader.auth.errors import InvalidTokenError
from cracktrader.auth.store import ApiKeyRow, AuthStore, UserRow
from cracktrader.auth.tokens import AccessClaims, TokenSettings, decode_access_token

__all__ = ["LOCAL_ADMIN", "ROLE_SCOPES", "Authenticator", "Principal"]

# What a logged-in person of each role may do. An API key gets its own scopes, intersected with its owner's role,
# so demoting a user also limits their keys.
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "admin": frozenset(SCOPES),
    "trader": frozenset(SCOPES),
    "viewer": frozenset({"read"}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    user_id: int | None
    username: str
    role: str
    scopes: frozenset[str]
    via: Literal["local", "token", "api_key"]
    api_key_id: int | None = None

    @property
    def is_admin(self) -> bool:
        """Admins see and manage every user's runs."""
        return self.role == "admin"

    @property
    def owner_filter(self) -> int | None:
        """The user id to scope data by, or None for everything (admins and the local user)."""
        return None if self.is_admin else self.user_id


# Auth off: the seed-003 local model, where whoever reaches the loopback server is the operator.
LOCAL_ADMIN = Principal(user_id=None, username="local", role="admin", scopes=frozenset(SCOPES), via="local")


class Authenticator:
    """Turns bearer tokens and API keys into principals; users and keys are cached for `cache_ttl_s`."""

    def __init__(self, *, store: AuthStore, tokens: TokenSettings, cache_ttl_s: float = 10.0) -> None:
        self.store = store
        self.tokens = tokens
        # A change made through this server invalidates its entry at once; one made elsewhere (the CLI) within TTL.
        self.users: TTLCache[int, UserRow | None] = TTLCache(ttl_s=cache_ttl_s)
        self.keys: TTLCache[str, ApiKeyRow | None] = TTLCache(ttl_s=cache_ttl_s)
        # PyJWT's decode costs ~100-160 us (it validates base64 per character); a client sends the same token for
        # its whole lifetime, so remember tokens already verified, keyed by their exact text, until they expire.
        self._verified: dict[str, AccessClaims] = {}
        self.max_verified = 10_000

    async def user(self, user_id: int) -> UserRow | None:
        """A user, from the cache when fresh."""
        cached = self.users.get(user_id)
        if cached is None:
            cached = await self.store.get_user(user_id)
            self.users.put(user_id, cached)
        return cached

    async def from_bearer(self, token: str) -> Principal:
        """The principal of a valid access token whose user is still active."""
        claims = self._verified.get(token)
        if claims is None or claims.expires_at <= time.time():
            claims = decode_access_token(token, settings=self.tokens)
            if len(self._verified) >= self.max_verified:
                self._verified.clear()
            self._verified[token] = claims
        user = await self.user(claims.user_id)
        if user is None or not user.is_active:
            raise InvalidTokenError("This account is disabled or no longer exists")
        return Principal(user.id, user.username, user.role, ROLE_SCOPES.get(user.role, frozenset()), "token")

    async def from_api_key(self, raw: str) -> Principal:
        """The principal of a valid, unrevoked, unexpired key whose owner is active."""
        parsed = parse_api_key(raw)
        if parsed is None:
            raise InvalidTokenError("Malformed API key")
        prefix, secret = parsed
        row = self.keys.get(prefix)
        if row is None:
            row = await self.store.get_api_key_by_prefix(prefix)
            if row is not None:
                self.keys.put(prefix, row)
        if row is None or not secret_matches(secret, row.secret_hash):
            raise InvalidTokenError("Invalid API key")
        if row.revoked_at is not None or is_expired(row.expires_at, datetime.now(UTC)) or not row.owner_active:
            raise InvalidTokenError("API key revoked, expired, or its owner is disabled")
        scopes = row.scopes & ROLE_SCOPES.get(row.owner_role, frozenset())
        return Principal(row.user_id, row.owner_username, row.owner_role, scopes, "api_key", api_key_id=row.id)

    def forget_user(self, user_id: int) -> None:
        """Drop a user from the cache after a change."""
        self.users.pop(user_id)

    def forget_keys(self) -> None:
        """Drop cached keys after a revocation."""
        self.keys.clear()
