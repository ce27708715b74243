"""Account operations used by the API and the CLI: login, refresh, logout, users and API keys."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from cracktrader.auth.api_keys import SCOPES, generate_api_key
from cracktrader.auth.errors import (
    ForbiddenError,
    InvalidCredentialsError,
    InvalidTokenError,
    RateLimitedError,
    UserNotFoundError,
)
from cracktrader.auth.login_limiter import LoginLimits
from cracktrader.auth.passwords import (
    check_password_policy,
    dummy_hash,
    hash_password_async,
    verify_password_async,
)
from cracktrader.auth.principal import ROLE_SCOPES, Principal
from cracktrader.auth.store import ApiKeyRow, AuthStore, UserRow, normalize_username
from cracktrader.auth.tokens import (
    TokenSettings,
    create_access_token,
    hash_token,
    new_family_id,
    new_refresh_token,
)
from cracktrader.db.models import ROLES

__all__ = [
    "authenticate",
    "create_api_key",
    "create_api_key_for",
    "create_user",
    "issue_tokens",
    "list_api_keys",
    "logout",
    "refresh_tokens",
    "reset_password",
    "revoke_api_key",
    "set_user_active",
]


async def authenticate(
    *, store: AuthStore, limiter: LoginLimits, username: str, password: str, ip: str | None
) -> UserRow:
    """Check a username and password, within the per-address lockout and the per-username slowdown."""
    name = normalize_username(username)
    wait = await limiter.wait(username=name, ip=ip)
    if wait:
        raise RateLimitedError(
            f"Too many failed logins; try again in {wait} s",
            details={"retry_after": wait},
            headers={"Retry-After": str(wait)},
        )
    user = await store.get_user_by_username(name) if name else None
    # Unknown users are checked against a dummy hash so the answer takes as long as for a real one.
    ok, new_hash = await verify_password_async(password, user.password_hash if user else dummy_hash())
    if user is None or not ok or not user.is_active:
        await limiter.failed(username=name, ip=ip)
        raise InvalidCredentialsError("Incorrect username or password")
    await limiter.succeeded(username=name, ip=ip)
    if new_hash is not None:
        await store.upgrade_password_hash(user.id, new_hash)
    return user


async def issue_tokens(
    *, store: AuthStore, user: UserRow, settings: TokenSettings, family_id: str | None = None
) -> dict[str, Any]:
    """A new access token and refresh token (a new login family unless rotating within one)."""
    refresh = new_refresh_token()
    family = family_id or new_family_id()
    await store.add_refresh_token(
        user_id=user.id,
        token_hash=hash_token(refresh),
        family_id=family,
        expires_at=datetime.now(UTC) + timedelta(days=settings.refresh_days),
    )
    # The access token names its login (sid): ending the login (logout, reuse, reset, disable) ends the token.
    access = create_access_token(user_id=user.id, role=user.role, settings=settings, session_id=family)
    return {
        "access_token": access,
        "token_type": "bearer",
        "refresh_token": refresh,
        "expires_in": settings.access_minutes * 60,
    }


async def refresh_tokens(*, store: AuthStore, refresh_token: str, settings: TokenSettings) -> dict[str, Any]:
    """Rotate a refresh token; presenting one that was already rotated revokes its whole family."""
    row = await store.get_refresh_token(hash_token(refresh_token))
    if row is None:
        raise InvalidTokenError("Unknown refresh token")
    if row.used_at is not None:
        # Someone replayed a rotated token: the legitimate holder or a thief has the newer one, so end the login.
        await store.revoke_refresh_family(row.family_id)
        raise InvalidTokenError("Refresh token reuse detected; log in again")
    if row.revoked_at is not None or row.expires_at <= datetime.now(UTC):
        raise InvalidTokenError("Refresh token revoked or expired; log in again")
    user = await store.get_user(row.user_id)
    if user is None or not user.is_active:
        await store.revoke_refresh_family(row.family_id)
        raise InvalidTokenError("This account is disabled")
    if not await store.mark_refresh_used(row.id):
        # Lost a race with another use of the same token: treat as reuse.
        await store.revoke_refresh_family(row.family_id)
        raise InvalidTokenError("Refresh token reuse detected; log in again")
    return await issue_tokens(store=store, user=user, settings=settings, family_id=row.family_id)


async def logout(*, store: AuthStore, principal: Principal, refresh_token: str | None) -> int:
    """End one login (the refresh token's family, and the caller's own) or, without a token, every login.

    Access tokens of an ended login stop working too (they carry its id). The number of refresh tokens revoked.
    """
    if principal.user_id is None:
        return 0
    if not refresh_token:
        return await store.revoke_user_refresh_tokens(principal.user_id)
    revoked = 0
    row = await store.get_refresh_token(hash_token(refresh_token))
    if row is not None and row.user_id == principal.user_id:
        revoked += await store.revoke_refresh_family(row.family_id)
    if principal.session_id is not None and (row is None or row.family_id != principal.session_id):
        revoked += await store.revoke_refresh_family(principal.session_id)
    return revoked


async def create_user(*, store: AuthStore, username: str, password: str, role: str = "trader") -> UserRow:
    """A new active user with an Argon2-hashed password."""
    name = normalize_username(username)
    if not 1 <= len(name) <= 150:
        raise ValueError("usernames are 1 to 150 characters")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    check_password_policy(password)
    return await store.create_user(username=name, password_hash=await hash_password_async(password), role=role)


async def _user_named(store: AuthStore, username: str) -> UserRow:
    user = await store.get_user_by_username(username)
    if user is None:
        raise UserNotFoundError(f"No user named {normalize_username(username)!r}")
    return user


async def set_user_active(*, store: AuthStore, username: str, active: bool) -> UserRow:
    """Enable or disable a user; disabling also ends their logins."""
    user = await _user_named(store, username)
    await store.set_active(user.id, active=active)
    if not active:
        await store.revoke_user_refresh_tokens(user.id)
    return user


async def reset_password(*, store: AuthStore, username: str, password: str) -> UserRow:
    """Set a new password and end every existing login of the user."""
    check_password_policy(password)
    user = await _user_named(store, username)
    await store.set_password_hash(user.id, await hash_password_async(password))
    await store.revoke_user_refresh_tokens(user.id)
    return user


def _check_scopes(scopes: Iterable[str], allowed: frozenset[str]) -> frozenset[str]:
    wanted = frozenset(scopes) or frozenset({"read"})
    unknown = wanted - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scope(s) {sorted(unknown)}; use {', '.join(SCOPES)}")
    if not wanted <= allowed:
        raise ForbiddenError(
            f"Cannot grant scope(s) {sorted(wanted - allowed)} you do not have",
            details={"allowed": sorted(allowed)},
        )
    return wanted


async def create_api_key(
    *,
    store: AuthStore,
    user_id: int,
    name: str,
    scopes: Iterable[str],
    allowed: frozenset[str] = frozenset(SCOPES),
    expires_at: datetime | None = None,
) -> tuple[str, ApiKeyRow]:
    """A new key for the user: the full key (show it once) and its stored row."""
    granted = _check_scopes(scopes, allowed)
    generated = generate_api_key()
    row = await store.create_api_key(
        user_id=user_id,
        name=name,
        prefix=generated.prefix,
        secret_hash=generated.secret_hash,
        scopes=granted,
        expires_at=expires_at,
    )
    return generated.key, row


async def create_api_key_for(
    *, store: AuthStore, username: str, name: str, scopes: Iterable[str], expires_at: datetime | None = None
) -> tuple[str, ApiKeyRow]:
    """A new key for a user named on the command line (limited to what the user's role allows)."""
    user = await _user_named(store, username)
    return await create_api_key(
        store=store,
        user_id=user.id,
        name=name,
        scopes=scopes,
        allowed=ROLE_SCOPES.get(user.role, frozenset()),
        expires_at=expires_at,
    )


async def list_api_keys(*, store: AuthStore, user_id: int | None = None) -> list[ApiKeyRow]:
    """Keys of one user, or all (never their secrets: only hashes are stored)."""
    return await store.list_api_keys(user_id=user_id)


async def revoke_api_key(*, store: AuthStore, key_id: int, user_id: int | None = None) -> ApiKeyRow:
    """Revoke a key (restricted to the user's own keys when user_id is given)."""
    row = await store.revoke_api_key(key_id, user_id=user_id)
    if row is None:
        raise UserNotFoundError(f"No API key with id {key_id}", details={"key_id": key_id})
    return row
