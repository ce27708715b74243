"""Rate limits and revocation notices shared by every server process through PostgreSQL (no Redis configured)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cracktrader.auth.login_limiter import LoginEntry, LoginPolicy
from cracktrader.notify import PostgresNotices

__all__ = ["REVOCATION_CHANNEL", "PostgresLoginLimiter", "PostgresRateLimiter", "PostgresRevocationNotices"]

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


# Creates the key's row if needed and locks it until the transaction ends (so failures on it are counted one at a
# time); the database's clock is the time every process shares.
_LOCK_ENTRY = text(
    """
    INSERT INTO auth_login_failures AS f (key, failures, last_failure, locked_until) VALUES (:key, 0, 0, 0)
    ON CONFLICT (key) DO UPDATE SET key = f.key
    RETURNING f.failures, f.last_failure, f.locked_until, extract(epoch FROM now())::float8
    """
)
_SAVE_ENTRY = text(
    "UPDATE auth_login_failures SET failures = :failures, last_failure = :last, locked_until = :locked WHERE key = :key"
)
_READ_ENTRIES = text(
    """
    SELECT extract(epoch FROM now())::float8, f.key, f.failures, f.last_failure, f.locked_until
    FROM (SELECT 1) AS one LEFT JOIN auth_login_failures f ON f.key IN (:ip, :user, :pair)
    """
)
_PRUNE = text(
    "DELETE FROM auth_login_failures WHERE last_failure < extract(epoch FROM now())::float8 - :forget "
    "AND locked_until < extract(epoch FROM now())::float8"
)
# Pause between attempts to listen again after the listening connection was lost.
_RELISTEN_S = 0.5
# Forgotten rows are deleted every this many failures counted by a process (names sprayed by an attacker).
_PRUNE_EVERY = 200


class PostgresLoginLimiter:
    """LoginPolicy with its counters in PostgreSQL: a lockout earned on one process holds on all of them."""

    def __init__(self, engine: AsyncEngine, policy: LoginPolicy) -> None:
        self.policy = policy
        self._engine = engine
        self._failures = 0

    async def wait(self, *, username: str, ip: str | None) -> int:
        """Seconds until this address may try this user name; 0 when allowed now."""
        keys = self.policy.keys(username, ip)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_READ_ENTRIES, {"ip": keys.ip, "user": keys.user, "pair": keys.pair})).all()
        entries: dict[str, LoginEntry | None] = {
            row[1]: LoginEntry(int(row[2]), float(row[3]), float(row[4])) for row in rows if row[1] is not None
        }
        return self.policy.wait(keys, entries, float(rows[0][0]))

    async def failed(self, *, username: str, ip: str | None) -> None:
        """Count a failure against the address, the user name, and the pair (always locked in the same order)."""
        async with self._engine.begin() as conn:
            for key, threshold in self.policy.thresholds(self.policy.keys(username, ip)):
                failures, last, locked, now = (await conn.execute(_LOCK_ENTRY, {"key": key})).one()
                current = LoginEntry(int(failures), float(last), float(locked)) if failures else None
                entry = self.policy.bump(current, threshold, float(now))
                params = {"key": key, "failures": entry.failures, "last": entry.last_failure}
                await conn.execute(_SAVE_ENTRY, {**params, "locked": entry.locked_until})
            self._failures += 1
            if self._failures % _PRUNE_EVERY == 0:
                await conn.execute(_PRUNE, {"forget": self.policy.forget_after_s})

    async def succeeded(self, *, username: str, ip: str | None) -> None:
        """The address knew the password: the name's slowdown stops applying to it."""
        async with self._engine.begin() as conn:
            pair = self.policy.keys(username, ip).pair
            await conn.execute(text("DELETE FROM auth_login_failures WHERE key = :key"), {"key": pair})


class PostgresRevocationNotices:
    """Tells every process of a revocation with NOTIFY; each process LISTENs on one held connection."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._notices = PostgresNotices(engine, REVOCATION_CHANNEL)

    @property
    def backend_pid(self) -> int | None:
        """The listening connection's server process id (None while disconnected)."""
        return self._notices.backend_pid

    @property
    def connections(self) -> int:
        """Connections made so far (tests wait for a reconnect after killing the listener's)."""
        return self._notices.connections

    async def publish(self) -> None:
        """Announce that this process revoked something (after the database change committed)."""
        await self._notices.publish()

    async def start(self, on_notice: Callable[[], None]) -> None:
        """LISTEN and call `on_notice` per notice, and after a reconnect (notices sent meanwhile are lost)."""
        await self._notices.start(lambda _payload: on_notice())

    async def close(self) -> None:
        """Stop listening."""
        await self._notices.close()
