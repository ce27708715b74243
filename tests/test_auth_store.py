"""Auth persistence on SQLite and PostgreSQL, the service's rules, revocations, and the login limiter."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy import update

from cracktrader.auth import service
from cracktrader.auth.api_keys import parse_api_key
from cracktrader.auth.errors import (
    ForbiddenError,
    InvalidCredentialsError,
    InvalidTokenError,
    RateLimitedError,
    UserExistsError,
    UserNotFoundError,
    WeakPasswordError,
)
from cracktrader.auth.login_limiter import LoginLimiter
from cracktrader.auth.principal import Authenticator
from cracktrader.auth.revocation import RevocationPoller
from cracktrader.auth.store import ApiKeyRow, AuthStore, UserRow
from cracktrader.auth.tokens import TokenSettings, create_access_token
from cracktrader.db.models import UserRecord
from db_support import DatabaseTarget

pytestmark = pytest.mark.anyio
TOKENS = TokenSettings(secret="s" * 64)
PASSWORD = "a long enough password"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(target: DatabaseTarget) -> AsyncIterator[AuthStore]:
    engine = target.engine()
    yield AuthStore(engine)
    await engine.dispose()


async def test_users_are_unique_case_insensitively_and_passwords_are_hashed(store: AuthStore) -> None:
    user = await service.create_user(store=store, username=" Ann ", password=PASSWORD, role="viewer")
    assert user.username == "ann" and user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
    with pytest.raises(UserExistsError):
        await service.create_user(store=store, username="ANN", password=PASSWORD)
    with pytest.raises(WeakPasswordError):
        await service.create_user(store=store, username="ben", password="short")
    limiter = LoginLimiter()
    found = await service.authenticate(store=store, limiter=limiter, username="ANN", password=PASSWORD, ip="1.2.3.4")
    assert found.id == user.id
    await service.set_user_active(store=store, username="ann", active=False)
    with pytest.raises(InvalidCredentialsError):  # disabled users cannot log in
        await service.authenticate(store=store, limiter=limiter, username="ann", password=PASSWORD, ip=None)
    await service.set_user_active(store=store, username="ann", active=True)
    await service.reset_password(store=store, username="ann", password="another password")
    assert (await store.list_users())[0].password_hash != user.password_hash


async def test_refresh_tokens_rotate_once_and_reuse_kills_the_family(store: AuthStore) -> None:
    user = await service.create_user(store=store, username="cy", password=PASSWORD)
    first = await service.issue_tokens(store=store, user=user, settings=TOKENS)
    second = await service.refresh_tokens(store=store, refresh_token=first["refresh_token"], settings=TOKENS)
    with pytest.raises(InvalidTokenError, match="reuse"):
        await service.refresh_tokens(store=store, refresh_token=first["refresh_token"], settings=TOKENS)
    with pytest.raises(InvalidTokenError):
        await service.refresh_tokens(store=store, refresh_token=second["refresh_token"], settings=TOKENS)
    other = await service.issue_tokens(store=store, user=user, settings=TOKENS)
    await service.reset_password(store=store, username="cy", password="a new password!")
    with pytest.raises(InvalidTokenError):
        await service.refresh_tokens(store=store, refresh_token=other["refresh_token"], settings=TOKENS)


async def test_api_keys_resolve_by_prefix_with_scopes_capped_by_role(store: AuthStore) -> None:
    viewer = await service.create_user(store=store, username="vi", password=PASSWORD, role="viewer")
    with pytest.raises(ForbiddenError):
        await service.create_api_key_for(store=store, username="vi", name="k", scopes=["trade"])
    key, row = await service.create_api_key_for(store=store, username="vi", name="k", scopes=["read"])
    prefix, secret = parse_api_key(key) or ("", "")
    assert row.prefix == prefix and secret not in row.secret_hash
    auth = Authenticator(store=store, tokens=TOKENS, cache_ttl_s=0)
    principal = await auth.from_api_key(key)
    assert (principal.user_id, principal.scopes, principal.via) == (viewer.id, frozenset({"read"}), "api_key")
    with pytest.raises(InvalidTokenError):
        await auth.from_api_key(prefix + "." + "x" * 43)
    with pytest.raises(UserNotFoundError, match="No API key"):
        await service.revoke_api_key(store=store, key_id=row.id, user_id=viewer.id + 1000)
    await service.revoke_api_key(store=store, key_id=row.id, user_id=viewer.id)
    with pytest.raises(InvalidTokenError):
        await auth.from_api_key(key)
    token = create_access_token(user_id=viewer.id, role="viewer", settings=TOKENS)
    assert (await auth.from_bearer(token)).scopes == frozenset({"read"})
    await service.set_user_active(store=store, username="vi", active=False)
    auth.forget_user(viewer.id)
    with pytest.raises(InvalidTokenError):
        await auth.from_bearer(token)


def test_login_limiter_locks_addresses_and_slows_names_but_spares_addresses_that_never_failed() -> None:
    now = [0.0]
    limiter = LoginLimiter(user_threshold=3, ip_threshold=5, base_lockout_s=10, clock=lambda: now[0])
    for _ in range(2):
        limiter.record_failure(username="u", ip="evil")
    assert limiter.retry_after(username="u", ip="evil") == 0
    limiter.record_failure(username="u", ip="evil")
    # The name is slowed down for the address that failed on it, not for the real user's.
    assert limiter.retry_after(username="u", ip="evil") == 10
    assert limiter.retry_after(username="u", ip="home") == 0
    now[0] = 11
    limiter.record_failure(username="u", ip="evil")
    assert limiter.retry_after(username="u", ip="evil") == 20  # doubled
    assert limiter.retry_after(username="u", ip="home") == 0
    # Failing on the name from a new address makes that address wait too...
    limiter.record_failure(username="u", ip="evil2")
    assert limiter.retry_after(username="u", ip="evil2") == 40
    # ...and the right password from a clean address clears only that address's record for the name.
    limiter.record_success(username="u", ip="home")
    assert limiter.retry_after(username="u", ip="evil2") == 40
    # Logging in to one's own account does not wash an address's failures on another.
    limiter.record_success(username="mallory", ip="evil2")
    assert limiter.retry_after(username="u", ip="evil2") == 40
    # An address spraying names is locked out whatever name it tries next.
    for name in ("a", "b", "c", "d", "e"):
        limiter.record_failure(username=name, ip="spray")
    assert limiter.retry_after(username="fresh", ip="spray") == 10
    assert limiter.retry_after(username="fresh", ip="home") == 0
    # Everything decays: after the slowdown and the forget window nobody waits.
    now[0] = 11 + 900 + 41
    assert limiter.retry_after(username="u", ip="evil") == 0


async def test_service_login_lets_the_right_password_through_from_another_address(store: AuthStore) -> None:
    await service.create_user(store=store, username="zed", password=PASSWORD)
    limiter = LoginLimiter()
    for _ in range(5):
        with pytest.raises(InvalidCredentialsError):
            await service.authenticate(store=store, limiter=limiter, username="zed", password="wrong!!!", ip="6.6.6.6")
    for password in ("wrong!!!", PASSWORD):  # the attacker's address waits, even with the right password
        with pytest.raises(RateLimitedError):
            await service.authenticate(store=store, limiter=limiter, username="zed", password=password, ip="6.6.6.6")
    user = await service.authenticate(store=store, limiter=limiter, username="zed", password=PASSWORD, ip="10.0.0.2")
    assert user.username == "zed"


def _sid(access_token: str) -> str:
    return str(jwt.decode(access_token, options={"verify_signature": False})["sid"])


async def test_revocation_marker_moves_on_every_revocation_and_not_on_logins(store: AuthStore) -> None:
    user = await service.create_user(store=store, username="mo", password=PASSWORD)
    other = await service.create_user(store=store, username="other", password=PASSWORD)
    _, key = await service.create_api_key_for(store=store, username="mo", name="k", scopes=["read"])
    marker = await store.revocation_marker()
    first = await service.issue_tokens(store=store, user=user, settings=TOKENS)
    await service.refresh_tokens(store=store, refresh_token=first["refresh_token"], settings=TOKENS)
    assert await store.revocation_marker() == marker  # logins and rotations revoke nothing

    async def moves(change: Awaitable[object]) -> None:
        nonlocal marker
        await change
        new = await store.revocation_marker()
        assert new != marker
        marker = new

    await moves(store.revoke_refresh_family(_sid(first["access_token"])))
    await moves(service.reset_password(store=store, username="mo", password="a brand new password"))
    await moves(store.revoke_api_key(key.id))
    # Disabling a user with no logins or keys moves it; so does swapping who is disabled between two polls.
    await moves(store.set_active(other.id, active=False))

    async def swap() -> None:
        await store.set_active(other.id, active=True)
        await store.set_active(user.id, active=False)

    await moves(swap())


async def test_access_tokens_end_with_their_login_password_or_account_at_the_next_poll(
    store: AuthStore, target: DatabaseTarget
) -> None:
    user = await service.create_user(store=store, username="pat", password=PASSWORD)
    auth = Authenticator(store=store, tokens=TOKENS, cache_ttl_s=3600)
    poller = RevocationPoller(auth)
    await poller.poll_once()
    # The CLI: another process, its own engine on the same database.
    cli = AuthStore(target.engine())
    try:
        tokens = await service.issue_tokens(store=store, user=user, settings=TOKENS)
        principal = await auth.from_bearer(tokens["access_token"])
        assert principal.session_id == _sid(tokens["access_token"]) and principal.via == "token"
        await cli.revoke_refresh_family(_sid(tokens["access_token"]))
        assert await poller.poll_once() is True
        with pytest.raises(InvalidTokenError, match="login has ended"):
            await auth.from_bearer(tokens["access_token"])
        assert await poller.poll_once() is False  # nothing new: the caches stay warm

        second = await service.issue_tokens(store=store, user=user, settings=TOKENS)
        # A token without sid from a minute ago, for a password set two minutes ago.
        await _backdate_password(store, user.id, seconds=120)
        auth.invalidate()
        legacy = create_access_token(user_id=user.id, role="trader", settings=TOKENS, now=time.time() - 60)
        await auth.from_bearer(second["access_token"])
        await auth.from_bearer(legacy)  # no sid: only the account and password rules apply
        await service.reset_password(store=cli, username="pat", password="a brand new password")
        await poller.poll_once()
        for token in (second["access_token"], legacy):
            with pytest.raises(InvalidTokenError):
                await auth.from_bearer(token)
        third = await service.issue_tokens(store=store, user=(await store.get_user(user.id)) or user, settings=TOKENS)
        assert (await auth.from_bearer(third["access_token"])).user_id == user.id  # same second as the reset

        await cli.set_active(user.id, active=False)
        await poller.poll_once()
        with pytest.raises(InvalidTokenError, match="disabled"):
            await auth.from_bearer(third["access_token"])
    finally:
        await cli._engine.dispose()


async def _backdate_password(store: AuthStore, user_id: int, *, seconds: float) -> None:
    values = {"password_changed_at": datetime.now(UTC) - timedelta(seconds=seconds)}
    async with store._sessions.begin() as session:
        await session.execute(update(UserRecord).where(UserRecord.id == user_id).values(**values))


class CountingStore(AuthStore):
    """An AuthStore that counts the lookups the authenticator makes."""

    calls = 0

    async def get_user(self, user_id: int) -> UserRow | None:
        self.calls += 1
        return await super().get_user(user_id)

    async def get_api_key_by_prefix(self, prefix: str) -> ApiKeyRow | None:
        self.calls += 1
        return await super().get_api_key_by_prefix(prefix)

    async def family_is_live(self, family_id: str, user_id: int) -> bool:
        self.calls += 1
        return await super().family_is_live(family_id, user_id)


async def test_cached_checks_make_no_query_until_something_is_revoked(target: DatabaseTarget) -> None:
    store = CountingStore(target.engine())
    try:
        user = await service.create_user(store=store, username="quin", password=PASSWORD)
        key, _ = await service.create_api_key_for(store=store, username="quin", name="k", scopes=["read"])
        tokens = await service.issue_tokens(store=store, user=user, settings=TOKENS)
        auth = Authenticator(store=store, tokens=TOKENS, cache_ttl_s=3600)
        await auth.from_bearer(tokens["access_token"])
        await auth.from_api_key(key)
        assert store.calls == 3  # the user, the login, the key
        for _ in range(1000):
            await auth.from_bearer(tokens["access_token"])
            await auth.from_api_key(key)
        assert store.calls == 3
        auth.invalidate()
        # After an invalidation concurrent checks share one lookup per user, login and key.
        await asyncio.gather(*(auth.from_bearer(tokens["access_token"]) for _ in range(50)))
        assert store.calls == 5
    finally:
        await store._engine.dispose()


class GatedStore(AuthStore):
    """An AuthStore whose user lookups wait for a gate, to interleave them with a revocation."""

    def __init__(self, engine: Any) -> None:
        super().__init__(engine)
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def get_user(self, user_id: int) -> UserRow | None:
        self.waiting.set()
        await self.gate.wait()
        return await super().get_user(user_id)


async def test_a_lookup_that_raced_a_revocation_is_not_cached(target: DatabaseTarget) -> None:
    store = GatedStore(target.engine())
    try:
        store.gate.set()
        user = await service.create_user(store=store, username="rae", password=PASSWORD)
        store.gate.clear()
        token = create_access_token(user_id=user.id, role="trader", settings=TOKENS)
        auth = Authenticator(store=store, tokens=TOKENS, cache_ttl_s=3600)
        check = asyncio.create_task(auth.from_bearer(token))
        await store.waiting.wait()
        auth.invalidate()  # a revocation lands while the lookup is in flight
        store.gate.set()
        await check
        assert auth.users.get(user.id) is None  # what it read may predate the revocation: not kept
        await auth.from_bearer(token)
        assert auth.users.get(user.id) is not None
    finally:
        await store._engine.dispose()
