"""Stored exchange credentials, per user and name: sealed before they reach the database, opened only to be used."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from cracktrader.db.engine import make_sessionmaker
from cracktrader.db.models import ExchangeCredentialRecord
from cracktrader.db.secret_box import CredentialsUnreadableError, SecretBox
from cracktrader.db.strategy_store import LOCAL_OWNER
from cracktrader.errors import CracktraderError
from cracktrader.exchanges.credentials import CredentialFieldsError, ExchangeCredentials

__all__ = [
    "LOCAL_OWNER",
    "CredentialNotFoundError",
    "CredentialStore",
    "DuplicateCredentialError",
    "StoredCredential",
    "resolve_stored",
]


class CredentialNotFoundError(CracktraderError):
    """No stored credentials with that name among the caller's (another user's look the same: absent)."""

    code = "CREDENTIALS_NOT_FOUND"
    status_code = 404


class DuplicateCredentialError(CracktraderError):
    """The caller already stores credentials under that name (rotate them instead)."""

    code = "DUPLICATE_NAME"
    status_code = 409


@dataclass(frozen=True, slots=True)
class StoredCredential:
    """What may be shown of stored credentials: never a secret, nor a part of one."""

    name: str
    exchange: str
    created_at: datetime
    last_used_at: datetime | None
    rotated_at: datetime | None


def _shown(r: ExchangeCredentialRecord) -> StoredCredential:
    return StoredCredential(r.name, r.exchange, r.created_at, r.last_used_at, r.rotated_at)


def _bound(user_id: int, name: str, exchange: str) -> bytes:
    # NUL cannot occur in the parts (the API refuses it), so the binding is unambiguous.
    return f"{user_id}\x00{name}\x00{exchange}".encode()


def _seal(box: SecretBox, user_id: int, name: str, creds: ExchangeCredentials) -> bytes:
    plaintext = json.dumps(dict(creds.values), separators=(",", ":")).encode()
    return box.seal(plaintext, _bound(user_id, name, creds.exchange))


def _opened(box: SecretBox, record: ExchangeCredentialRecord) -> ExchangeCredentials:
    plaintext = box.open(record.ciphertext, _bound(record.user_id, record.name, record.exchange))
    values = {str(k): str(v) for k, v in json.loads(plaintext).items()}
    return ExchangeCredentials(record.exchange, MappingProxyType(values), name=record.name)


async def _record(session: AsyncSession, user_id: int, name: str) -> ExchangeCredentialRecord:
    query = select(ExchangeCredentialRecord).where(
        ExchangeCredentialRecord.user_id == user_id, ExchangeCredentialRecord.name == name
    )
    record = (await session.execute(query)).scalar_one_or_none()
    if record is None:
        raise CredentialNotFoundError(
            f"No stored credentials named {name!r}; see GET /api/v1/credentials or `cracktrader credentials list`",
            details={"name": name},
        )
    return record


async def resolve_stored(
    session: AsyncSession, user_id: int, name: str, box: SecretBox, *, now: datetime | None = None
) -> ExchangeCredentials:
    """The user's credentials `name`, opened for use (in memory only); notes the use in last_used_at."""
    record = await _record(session, user_id, name)
    try:
        creds = _opened(box, record)
    except CredentialsUnreadableError as exc:
        raise CredentialsUnreadableError(
            f"Stored credentials {name!r} do not open with the server's key: CRACKTRADER_SECRET_KEY (or the key file "
            "secret.key in the data folder) changed since they were stored. Restore that key, or delete the "
            "credentials and add them again",
            details={"name": name},
        ) from exc
    record.last_used_at = now or datetime.now(UTC)
    return creds


class CredentialStore:
    """Add, list, rotate, open and delete one user's stored credentials; another user's rows are invisible."""

    def __init__(self, engine: AsyncEngine, box: SecretBox) -> None:
        self._sessions = make_sessionmaker(engine)
        self.box = box

    async def add(self, user_id: int, name: str, creds: ExchangeCredentials) -> StoredCredential:
        """Store `creds` sealed under `name`; DuplicateCredentialError when the user already has that name."""
        now = datetime.now(UTC)
        record = ExchangeCredentialRecord(
            user_id=user_id,
            name=name,
            exchange=creds.exchange,
            ciphertext=_seal(self.box, user_id, name, creds),
            key_id=self.box.key_id,
            created_at=now,
        )
        try:
            async with self._sessions.begin() as session:
                session.add(record)
        except IntegrityError:
            raise DuplicateCredentialError(
                f"Credentials named {name!r} are stored already: rotate them, or delete them first",
                details={"name": name},
            ) from None
        return _shown(record)

    async def list(self, user_id: int) -> list[StoredCredential]:
        """The user's stored credentials by name."""
        query = (
            select(ExchangeCredentialRecord)
            .where(ExchangeCredentialRecord.user_id == user_id)
            .order_by(ExchangeCredentialRecord.name)
        )
        async with self._sessions() as session:
            return [_shown(r) for r in (await session.execute(query)).scalars()]

    async def get(self, user_id: int, name: str) -> StoredCredential:
        """One of the user's (CredentialNotFoundError when absent)."""
        async with self._sessions() as session:
            return _shown(await _record(session, user_id, name))

    async def rotate(self, user_id: int, name: str, creds: ExchangeCredentials) -> StoredCredential:
        """Replace the secrets under `name` (same exchange), sealed with the current key."""
        async with self._sessions.begin() as session:
            record = await _record(session, user_id, name)
            if record.exchange != creds.exchange:
                raise CredentialFieldsError(
                    f"Credentials {name!r} are for {record.exchange}, not {creds.exchange}: a rotation keeps it",
                    details={"name": name, "exchange": record.exchange},
                )
            record.ciphertext = _seal(self.box, user_id, name, creds)
            record.key_id = self.box.key_id
            record.rotated_at = datetime.now(UTC)
            return _shown(record)

    async def resolve(self, user_id: int, name: str) -> ExchangeCredentials:
        """Open the user's credentials `name` for use; notes the use."""
        async with self._sessions.begin() as session:
            return await resolve_stored(session, user_id, name, self.box)

    async def delete(self, user_id: int, name: str) -> None:
        """Delete the user's credentials `name` (CredentialNotFoundError when absent)."""
        async with self._sessions.begin() as session:
            await session.delete(await _record(session, user_id, name))

    async def unreadable(self) -> int:
        """Stored credentials (of every user) sealed by another key than this store's."""
        query = (
            select(func.count())
            .select_from(ExchangeCredentialRecord)
            .where(ExchangeCredentialRecord.key_id != self.box.key_id)
        )
        async with self._sessions() as session:
            return int((await session.execute(query)).scalar_one())
