"""Who is calling: principals, role scopes, and the cached resolution of access tokens and API keys."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

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
    # What identifies the credential, so an open stream can be re-checked after a revocation.
    session_id: str | None = None
    issued_at: int = 0
    key_prefix: str | None = None

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

T = TypeVar("T")
_NO_SCOPES: frozenset[str] = frozenset()


class Authenticator:
    """Turns bearer tokens and API keys into principals from in-memory caches, without a query per request.

    Cached users, keys and logins stay valid until `invalidate()`: this server calls it after its own changes
    (logout, key revocation), and a RevocationPoller calls it when another process (the CLI) changed something.
    `cache_ttl_s` is only a backstop should polling fail.
    """

    def __init__(self, *, store: AuthStore, tokens: TokenSettings, cache_ttl_s: float = 10.0) -> None:
        self.store = store
        self.tokens = tokens
        self.users: TTLCache[int, UserRow | None] = TTLCache(ttl_s=cache_ttl_s)
        self.keys: TTLCache[str, ApiKeyRow | None] = TTLCache(ttl_s=cache_ttl_s)
        # PyJWT's decode costs ~100-160 us (it validates base64 per character); a client sends the same token for
        # its whole lifetime, so remember tokens already verified, keyed by their exact text, until they expire,
        # with the user row and principal built from them (reused while that row is the cached one).
        self._verified: dict[str, tuple[AccessClaims, UserRow, Principal]] = {}
        self._key_principals: dict[str, tuple[ApiKeyRow, Principal]] = {}
        self.max_verified = 10_000
        # Logins (refresh families, the tokens' `sid`) known to be live, with their user; and ones known ended,
        # which never come back, so they survive invalidation.
        self._live_sessions: dict[str, int] = {}
        self._ended_sessions: set[str] = set()
        # Bumped by every invalidation. A lookup that started before one must not fill the cache with what it
        # read (it may predate the revocation); concurrent lookups of one key share a query.
        self.generation = 0
        self._changed = asyncio.Event()
        self._inflight: dict[tuple[str, object], asyncio.Future[Any]] = {}

    def invalidate(self) -> None:
        """Forget every cached user, key and live login (after a revocation), and wake the stream watchers."""
        self.generation += 1
        self.users.clear()
        self.keys.clear()
        self._live_sessions.clear()
        self._inflight.clear()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_changed(self, generation: int) -> None:
        """Return once `invalidate()` has been called since `generation` was read."""
        while self.generation == generation:
            await self._changed.wait()

    async def _load(self, kind: str, key: object, fetch: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """(value, fresh): one shared query per key and generation; fresh is False if an invalidation raced it."""
        generation = self.generation
        slot = (kind, key)
        future = self._inflight.get(slot)
        if future is None:
            future = asyncio.ensure_future(fetch())
            self._inflight[slot] = future
            future.add_done_callback(lambda done: self._forget_inflight(slot, done))
        value: T = await asyncio.shield(future)
        return value, generation == self.generation

    def _forget_inflight(self, slot: tuple[str, object], done: asyncio.Future[Any]) -> None:
        if self._inflight.get(slot) is done:
            del self._inflight[slot]

    async def user(self, user_id: int) -> UserRow | None:
        """A user, from the cache when fresh."""
        cached = self.users.get(user_id)
        if cached is None:
            cached, fresh = await self._load("user", user_id, lambda: self.store.get_user(user_id))
            if fresh:
                self.users.put(user_id, cached)
        return cached

    async def from_bearer(self, token: str) -> Principal:
        """The principal of a valid access token whose login has not ended and whose user is still active."""
        hit = self._verified.get(token)
        if hit is not None and hit[0].expires_at > time.time():
            claims, user, principal = hit
            # The common case, without an await: built from the very user row still cached, login still live.
            sid = claims.session_id
            if self.users.get(claims.user_id) is user and (sid is None or self._live_sessions.get(sid) == user.id):
                return principal
        else:
            claims = decode_access_token(token, settings=self.tokens)
        user = await self._check_session(claims.user_id, claims.session_id, claims.issued_at)
        scopes = ROLE_SCOPES.get(user.role, _NO_SCOPES)
        principal = Principal(
            user.id,
            user.username,
            user.role,
            scopes,
            "token",
            session_id=claims.session_id,
            issued_at=claims.issued_at,
        )
        if len(self._verified) >= self.max_verified:
            self._verified.clear()
        self._verified[token] = (claims, user, principal)
        return principal

    async def _check_session(self, user_id: int, session_id: str | None, issued_at: int) -> UserRow:
        """The token's user, unless the user is disabled, changed password since, or the login ended."""
        user = await self.user(user_id)
        if user is None or not user.is_active:
            raise InvalidTokenError("This account is disabled or no longer exists")
        if issued_at < user.tokens_valid_from:
            raise InvalidTokenError("The password was changed since this token was issued; log in again")
        # Tokens without `sid` are not minted by logins (older servers, tests): only the checks above apply.
        if session_id is not None and self._live_sessions.get(session_id) != user_id:
            await self._check_login(session_id, user_id)
        return user

    async def _check_login(self, session_id: str, user_id: int) -> None:
        if session_id in self._ended_sessions:
            raise InvalidTokenError("This login has ended; log in again")
        live, fresh = await self._load(
            "session", (session_id, user_id), lambda: self.store.family_is_live(session_id, user_id)
        )
        if not live:
            if len(self._ended_sessions) >= self.max_verified:
                self._ended_sessions.clear()
            self._ended_sessions.add(session_id)
            raise InvalidTokenError("This login has ended; log in again")
        if fresh:
            if len(self._live_sessions) >= self.max_verified:
                self._live_sessions.clear()
            self._live_sessions[session_id] = user_id

    def end_session(self, session_id: str) -> None:
        """Mark a login ended in this process at once (its refresh family was revoked)."""
        self._ended_sessions.add(session_id)
        self._live_sessions.pop(session_id, None)

    async def _key_row(self, prefix: str) -> ApiKeyRow | None:
        row = self.keys.get(prefix)
        if row is None:
            row, fresh = await self._load("key", prefix, lambda: self.store.get_api_key_by_prefix(prefix))
            if row is not None and fresh:
                self.keys.put(prefix, row)
        return row

    @staticmethod
    def _check_key(row: ApiKeyRow) -> None:
        expired = row.expires_at is not None and is_expired(row.expires_at, datetime.now(UTC))
        if row.revoked_at is not None or expired or not row.owner_active:
            raise InvalidTokenError("API key revoked, expired, or its owner is disabled")

    async def from_api_key(self, raw: str) -> Principal:
        """The principal of a valid, unrevoked, unexpired key whose owner is active."""
        parsed = parse_api_key(raw)
        if parsed is None:
            raise InvalidTokenError("Malformed API key")
        prefix, secret = parsed
        row = await self._key_row(prefix)
        if row is None or not secret_matches(secret, row.secret_hash):
            raise InvalidTokenError("Invalid API key")
        self._check_key(row)
        hit = self._key_principals.get(prefix)
        if hit is not None and hit[0] is row:
            return hit[1]
        scopes = row.scopes & ROLE_SCOPES.get(row.owner_role, _NO_SCOPES)
        principal = Principal(
            row.user_id,
            row.owner_username,
            row.owner_role,
            scopes,
            "api_key",
            api_key_id=row.id,
            key_prefix=prefix,
        )
        if len(self._key_principals) >= self.max_verified:
            self._key_principals.clear()
        self._key_principals[prefix] = (row, principal)
        return principal

    async def recheck(self, principal: Principal) -> None:
        """InvalidTokenError if the principal's credential was revoked since it was resolved (open streams).

        An access token's expiry is not re-checked: a stream lives as long as its login, as it always has.
        """
        if principal.via == "token" and principal.user_id is not None:
            await self._check_session(principal.user_id, principal.session_id, principal.issued_at)
        elif principal.via == "api_key" and principal.key_prefix is not None:
            row = await self._key_row(principal.key_prefix)
            if row is None or row.id != principal.api_key_id:
                raise InvalidTokenError("Invalid API key")
            self._check_key(row)

    def forget_user(self, user_id: int) -> None:
        """Drop a user from the cache after a change."""
        self.users.pop(user_id)

    def forget_keys(self) -> None:
        """Drop cached keys after a revocation."""
        self.keys.clear()
