"""Idempotency keys of start requests: claimed once per user and key, then answered with the run they started."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from cracktrader.db.models import IdempotencyKeyRecord

__all__ = ["IdempotencyStore", "StoredKey"]

_KEYS = cast(Table, IdempotencyKeyRecord.__table__)


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key some earlier request claimed: its body's hash and, once answered, its run and answer."""

    fingerprint: str
    run_id: str | None
    response: dict[str, Any] | None
    created_at: datetime


class IdempotencyStore:
    """The `idempotency_keys` table; the primary key (user, key) makes exactly one request the first."""

    def __init__(self, engine: AsyncEngine, *, ttl: timedelta) -> None:
        self.engine = engine
        self.ttl = ttl

    async def claim(self, *, user_id: int, key: str, fingerprint: str, now: datetime) -> StoredKey | None:
        """Claim `key` for a new request (None), or the earlier claim of it that is still within the TTL."""
        async with self.engine.begin() as conn:
            # Expired keys go first, so a key reused after the TTL starts a new run.
            await conn.execute(delete(_KEYS).where(_KEYS.c.created_at < now - self.ttl))
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    insert(_KEYS).values(user_id=user_id, key=key, fingerprint=fingerprint, created_at=now)
                )
            return None
        except IntegrityError:
            pass
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(_KEYS.c.fingerprint, _KEYS.c.run_id, _KEYS.c.response, _KEYS.c.created_at).where(
                        _KEYS.c.user_id == user_id, _KEYS.c.key == key
                    )
                )
            ).first()
        if row is None:  # expired and deleted by another request in between: claim it afresh
            return await self.claim(user_id=user_id, key=key, fingerprint=fingerprint, now=now)
        return StoredKey(row.fingerprint, row.run_id, row.response, row.created_at)

    async def answer(self, *, user_id: int, key: str, run_id: str, response: dict[str, Any]) -> None:
        """Record the run a claimed key started and the answer a retry gets."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(_KEYS)
                .where(_KEYS.c.user_id == user_id, _KEYS.c.key == key)
                .values(run_id=run_id, response=response)
            )

    async def release(self, *, user_id: int, key: str) -> None:
        """Forget a claim whose request failed before starting anything, so a retry can start the run."""
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(_KEYS).where(_KEYS.c.user_id == user_id, _KEYS.c.key == key, _KEYS.c.run_id.is_(None))
            )
