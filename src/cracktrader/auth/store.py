"""Persistence of users, API keys and refresh tokens (async SQLAlchemy; SQLite and PostgreSQL)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from cracktrader.auth.errors import UserExistsError
from cracktrader.db.engine import make_sessionmaker
from cracktrader.db.models import ROLES, ApiKeyRecord, RefreshTokenRecord, UserRecord

__all__ = ["ApiKeyRow", "AuthStore", "RefreshRow", "UserRow", "normalize_username"]


def normalize_username(username: str) -> str:
    """Usernames are case-insensitive and trimmed."""
    return username.strip().lower()


@dataclass(frozen=True, slots=True)
class UserRow:
    """A user as the rest of the code sees it."""

    id: int
    username: str
    role: str
    is_active: bool
    password_hash: str
    created_at: datetime
    password_changed_at: datetime | None = None
    # The earliest `iat` (whole seconds) an access token may carry: a password reset voids older ones. Stored,
    # not derived per request, because it is on the cached path of every check.
    tokens_valid_from: int = 0


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    """An API key with its owner's role and status (so one query authorizes a request)."""

    id: int
    user_id: int
    name: str
    prefix: str
    secret_hash: str
    scopes: frozenset[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    owner_username: str = ""
    owner_role: str = ""
    owner_active: bool = False


@dataclass(frozen=True, slots=True)
class RefreshRow:
    """A stored refresh token (hash only)."""

    id: int
    user_id: int
    family_id: str
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None


def _user(r: UserRecord) -> UserRow:
    changed = r.password_changed_at
    valid_from = int(changed.timestamp()) if changed is not None else 0
    return UserRow(r.id, r.username, r.role, r.is_active, r.password_hash, r.created_at, changed, valid_from)


def _key(r: ApiKeyRecord, owner: UserRecord | None = None) -> ApiKeyRow:
    return ApiKeyRow(
        id=r.id,
        user_id=r.user_id,
        name=r.name,
        prefix=r.prefix,
        secret_hash=r.secret_hash,
        scopes=frozenset(r.scopes.split()),
        created_at=r.created_at,
        expires_at=r.expires_at,
        revoked_at=r.revoked_at,
        owner_username=owner.username if owner else "",
        owner_role=owner.role if owner else "",
        owner_active=owner.is_active if owner else False,
    )


def _now() -> datetime:
    return datetime.now(UTC)


class AuthStore:
    """Users, API keys and refresh tokens in the application database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sessions = make_sessionmaker(engine)

    @property
    def engine(self) -> AsyncEngine:
        """The database engine (the shared rate limits and revocation notices use it on PostgreSQL)."""
        return self._engine

    # Users ---------------------------------------------------------------------------------------------
    async def create_user(self, *, username: str, password_hash: str, role: str) -> UserRow:
        """Insert a user; UserExistsError when the name is taken."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        now = _now()
        record = UserRecord(
            username=normalize_username(username),
            password_hash=password_hash,
            role=role,
            is_active=True,
            created_at=now,
            password_changed_at=now,
        )
        try:
            async with self._sessions.begin() as session:
                session.add(record)
        except IntegrityError:
            raise UserExistsError(f"User {normalize_username(username)!r} already exists") from None
        return _user(record)

    async def get_user(self, user_id: int) -> UserRow | None:
        """A user by id."""
        async with self._sessions() as session:
            record = await session.get(UserRecord, user_id)
            return _user(record) if record is not None else None

    async def get_user_by_username(self, username: str) -> UserRow | None:
        """A user by (case-insensitive) name."""
        query = select(UserRecord).where(UserRecord.username == normalize_username(username))
        async with self._sessions() as session:
            record = (await session.execute(query)).scalar_one_or_none()
            return _user(record) if record is not None else None

    async def list_users(self) -> list[UserRow]:
        """Every user, oldest first."""
        async with self._sessions() as session:
            records = (await session.execute(select(UserRecord).order_by(UserRecord.id))).scalars()
            return [_user(r) for r in records]

    async def count_users(self) -> int:
        """How many users exist."""
        async with self._sessions() as session:
            return int((await session.execute(select(func.count()).select_from(UserRecord))).scalar_one())

    async def set_active(self, user_id: int, *, active: bool) -> bool:
        """Enable or disable a user; False when there is no such user."""
        query = update(UserRecord).where(UserRecord.id == user_id).values(is_active=active)
        async with self._sessions.begin() as session:
            return bool((await session.execute(query)).rowcount)  # type: ignore[attr-defined]

    async def set_password_hash(self, user_id: int, password_hash: str) -> bool:
        """Replace a user's password hash; False when there is no such user."""
        values = {"password_hash": password_hash, "password_changed_at": _now()}
        query = update(UserRecord).where(UserRecord.id == user_id).values(**values)
        async with self._sessions.begin() as session:
            return bool((await session.execute(query)).rowcount)  # type: ignore[attr-defined]

    async def upgrade_password_hash(self, user_id: int, password_hash: str) -> None:
        """Store a re-hash with current parameters (same password, so password_changed_at stays)."""
        query = update(UserRecord).where(UserRecord.id == user_id).values(password_hash=password_hash)
        async with self._sessions.begin() as session:
            await session.execute(query)

    # API keys ------------------------------------------------------------------------------------------
    async def create_api_key(
        self,
        *,
        user_id: int,
        name: str,
        prefix: str,
        secret_hash: str,
        scopes: frozenset[str],
        expires_at: datetime | None = None,
    ) -> ApiKeyRow:
        """Store a new key (its secret's hash only)."""
        record = ApiKeyRecord(
            user_id=user_id,
            name=name,
            prefix=prefix,
            secret_hash=secret_hash,
            scopes=" ".join(sorted(scopes)),
            created_at=_now(),
            expires_at=expires_at,
            revoked_at=None,
        )
        async with self._sessions.begin() as session:
            session.add(record)
        return _key(record)

    async def get_api_key_by_prefix(self, prefix: str) -> ApiKeyRow | None:
        """The key with this prefix and its owner, in one indexed query."""
        query = (
            select(ApiKeyRecord, UserRecord)
            .join(UserRecord, UserRecord.id == ApiKeyRecord.user_id)
            .where(ApiKeyRecord.prefix == prefix)
        )
        async with self._sessions() as session:
            row = (await session.execute(query)).one_or_none()
            return _key(row[0], row[1]) if row is not None else None

    async def list_api_keys(self, *, user_id: int | None = None) -> list[ApiKeyRow]:
        """Keys of one user (or everyone's), oldest first."""
        query = select(ApiKeyRecord, UserRecord).join(UserRecord, UserRecord.id == ApiKeyRecord.user_id)
        if user_id is not None:
            query = query.where(ApiKeyRecord.user_id == user_id)
        async with self._sessions() as session:
            rows = (await session.execute(query.order_by(ApiKeyRecord.id))).all()
            return [_key(k, u) for k, u in rows]

    async def revoke_api_key(self, key_id: int, *, user_id: int | None = None) -> ApiKeyRow | None:
        """Revoke a key (of that user, when given); the key as it was, or None when not found."""
        query = select(ApiKeyRecord).where(ApiKeyRecord.id == key_id)
        if user_id is not None:
            query = query.where(ApiKeyRecord.user_id == user_id)
        async with self._sessions.begin() as session:
            record = (await session.execute(query)).scalar_one_or_none()
            if record is None:
                return None
            if record.revoked_at is None:
                record.revoked_at = _now()
            return _key(record)

    # Refresh tokens ------------------------------------------------------------------------------------
    async def add_refresh_token(self, *, user_id: int, token_hash: str, family_id: str, expires_at: datetime) -> None:
        """Store a refresh token's hash."""
        record = RefreshTokenRecord(
            user_id=user_id,
            token_hash=token_hash,
            family_id=family_id,
            created_at=_now(),
            expires_at=expires_at,
            used_at=None,
            revoked_at=None,
        )
        async with self._sessions.begin() as session:
            session.add(record)

    async def get_refresh_token(self, token_hash: str) -> RefreshRow | None:
        """A refresh token by hash."""
        query = select(RefreshTokenRecord).where(RefreshTokenRecord.token_hash == token_hash)
        async with self._sessions() as session:
            r = (await session.execute(query)).scalar_one_or_none()
            if r is None:
                return None
            return RefreshRow(r.id, r.user_id, r.family_id, r.expires_at, r.used_at, r.revoked_at)

    async def mark_refresh_used(self, token_id: int) -> bool:
        """Mark a token rotated; False when it already was (a concurrent or replayed use)."""
        query = (
            update(RefreshTokenRecord)
            .where(
                RefreshTokenRecord.id == token_id,
                RefreshTokenRecord.used_at.is_(None),
                RefreshTokenRecord.revoked_at.is_(None),
            )
            .values(used_at=_now())
        )
        async with self._sessions.begin() as session:
            return bool((await session.execute(query)).rowcount)  # type: ignore[attr-defined]

    async def family_is_live(self, family_id: str, user_id: int) -> bool:
        """Whether a login (refresh family) of this user exists and none of its tokens was revoked."""
        query = select(func.count(), func.count(RefreshTokenRecord.revoked_at)).where(
            RefreshTokenRecord.family_id == family_id, RefreshTokenRecord.user_id == user_id
        )
        async with self._sessions() as session:
            total, revoked = (await session.execute(query)).one()
            return bool(total) and not revoked

    async def revocation_marker(self) -> tuple[Any, ...]:
        """A value that changes whenever a credential is revoked, in one small query (servers poll it).

        Covers password resets (password_changed_at), disabling users (which users are disabled), revoked API
        keys and ended logins (revoked_at). It is compared for equality only, so clock skew between the CLI and
        the server does not matter.
        """
        disabled = UserRecord.is_active.is_(False)
        query = select(
            select(func.max(UserRecord.password_changed_at)).scalar_subquery(),
            select(func.count()).select_from(UserRecord).where(disabled).scalar_subquery(),
            select(func.coalesce(func.sum(UserRecord.id), 0)).where(disabled).scalar_subquery(),
            select(func.max(ApiKeyRecord.revoked_at)).scalar_subquery(),
            select(func.max(RefreshTokenRecord.revoked_at)).scalar_subquery(),
        )
        async with self._sessions() as session:
            return tuple((await session.execute(query)).one())

    async def revoke_refresh_family(self, family_id: str) -> int:
        """Revoke every token of a login's chain."""
        return await self._revoke(RefreshTokenRecord.family_id == family_id)

    async def revoke_user_refresh_tokens(self, user_id: int) -> int:
        """Revoke every refresh token of a user (logout everywhere, password reset, disable)."""
        return await self._revoke(RefreshTokenRecord.user_id == user_id)

    async def _revoke(self, condition: object) -> int:
        query = (
            update(RefreshTokenRecord)
            .where(condition, RefreshTokenRecord.revoked_at.is_(None))  # type: ignore[arg-type]
            .values(revoked_at=_now())
        )
        async with self._sessions.begin() as session:
            return int((await session.execute(query)).rowcount)  # type: ignore[attr-defined]
