"""Auth persistence on SQLite and PostgreSQL, the service's rules, and the login limiter."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cracktrader.auth import service
from cracktrader.auth.api_keys import parse_api_key
from cracktrader.auth.errors import (
    ForbiddenError,
    InvalidCredentialsError,
    InvalidTokenError,
    UserExistsError,
    UserNotFoundError,
    WeakPasswordError,
)
from cracktrader.auth.login_limiter import LoginLimiter
from cracktrader.auth.principal import Authenticator
from cracktrader.auth.store import AuthStore
from cracktrader.auth.tokens import TokenSettings, create_access_token
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


def test_login_limiter_locks_per_username_and_per_ip_with_growing_lockouts() -> None:
    now = [0.0]
    limiter = LoginLimiter(user_threshold=3, ip_threshold=5, base_lockout_s=10, clock=lambda: now[0])
    for _ in range(2):
        limiter.record_failure(username="u", ip="ip1")
    assert limiter.retry_after(username="u", ip="ip1") == 0
    limiter.record_failure(username="u", ip="ip1")
    assert limiter.retry_after(username="u", ip="ip9") == 10
    now[0] = 11
    limiter.record_failure(username="u", ip="ip2")
    assert limiter.retry_after(username="u", ip="ip2") == 20  # doubled
    for name in ("a", "b", "c", "d", "e"):
        limiter.record_failure(username=name, ip="ip3")
    assert limiter.retry_after(username="fresh", ip="ip3") == 10  # the IP is locked, whatever the username
    limiter.record_success(username="u")
    assert limiter.retry_after(username="u", ip="ip4") == 0
