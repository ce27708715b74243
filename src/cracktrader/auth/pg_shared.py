"""Rate limits and revocation notices shared by every server process through PostgreSQL (no Redis configured)."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["REVOCATION_CHANNEL", "PostgresRateLimiter", "PostgresRevocationNotices"]

log = logging.getLogger(__name__)

REVOCATION_CHANNEL = "cracktrader_auth_revoked"

# GCRA in one atomic upsert on the database's clock: a row comes back only when the request is allowed (the
# conditional DO UPDATE leaves a refused key untouched and returns nothing).
_TAKE = text(
    """
    INSERT INTO auth_rate_limits AS r (key, tat) VALUES (:key, extract(epoch FROM now())::float8 + :interval)
    ON CONFLICT (key) DO UPDATE SET tat = GREATEST(r.tat, extract(epoch FROM now())::float8) + :interval
    WHERE GREATEST(r.tat, extract(epoch FROM now())::float8) + :interval - extract(epoch FROM now())::float8
        <= :period
    RETURNING r.tat
    """
)
_WAIT = text("SELECT tat - extract(epoch FROM now())::float8 FROM auth_rate_limits WHERE key = :key")


class PostgresRateLimiter:
    """`per_minute` requests a minute per key across all processes; one statement per request."""

    def __init__(self, engine: AsyncEngine, per_minute: int) -> None:
        self.per_minute = per_minute
        self._engine = engine
        self._interval = 60.0 / per_minute if per_minute else 0.0

    @property
    def enabled(self) -> bool:
        """Whether requests are limited at all."""
        return self.per_minute > 0

    async def take(self, key: str) -> int:
        """Spend one request of `key`'s allowance: 0 when allowed, else whole seconds until one is."""
        if not self.enabled:
            return 0
        params = {"key": key, "interval": self._interval, "period": 60.0}
        async with self._engine.begin() as conn:
            if (await conn.execute(_TAKE, params)).first() is not None:
                return 0
            ahead = (await conn.execute(_WAIT, {"key": key})).scalar()
        wait = float(ahead or 0.0) + self._interval - 60.0
        return max(1, math.ceil(wait))


class PostgresRevocationNotices:
    """Tells every process of a revocation with NOTIFY; each process LISTENs on one held connection."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._driver: Any = None
        self._callback: Any = None

    async def publish(self) -> None:
        """Announce that this process revoked something (after the database change committed)."""
        async with self._engine.begin() as conn:
            await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": REVOCATION_CHANNEL})

    async def start(self, on_notice: Callable[[], None]) -> None:
        """LISTEN (before returning, so no later notice is missed) and call `on_notice` per notice."""
        self._conn = await self._engine.connect()
        raw = await self._conn.get_raw_connection()
        self._driver = raw.driver_connection

        def callback(*_: object) -> None:
            on_notice()

        def terminated(*_: object) -> None:
            # The listening connection is gone: notices may be lost; the poller remains the safety net.
            log.warning("Revocation notices from PostgreSQL interrupted; relying on polling")
            on_notice()

        self._callback = callback
        await self._driver.add_listener(REVOCATION_CHANNEL, callback)
        self._driver.add_termination_listener(terminated)

    async def close(self) -> None:
        """Stop listening and hand the connection back."""
        if self._conn is None:
            return
        with contextlib.suppress(Exception):
            await self._driver.remove_listener(REVOCATION_CHANNEL, self._callback)
        with contextlib.suppress(Exception):
            await self._conn.close()
        self._conn = None
