"""A paper session's rows, appended as it runs, under one owner at a time (a server lease and a fencing token).

Every write of a session runs `UPDATE session_state ... WHERE fencing_token = :mine` first, in its transaction:
a server that lost the session (its lease expired and another server took it over, incrementing the token)
finds no row to update, writes nothing and gets `StaleTokenError`.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, cast

from sqlalchemy import CursorResult, Table, exists, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cracktrader.db.models import (
    RunRecord,
    ServerRecord,
    SessionBalanceRecord,
    SessionCandleRecord,
    SessionEquityRecord,
    SessionFillRecord,
    SessionOrderRecord,
    SessionPositionRecord,
    SessionStateRecord,
)
from cracktrader.errors import CracktraderError

__all__ = ["FinalStatus", "SessionDelta", "SessionStore", "StaleTokenError", "StoredSession", "fence"]

ACTIVE = ("starting", "running")
# Rows per INSERT statement: SQLite allows 32,766 bound parameters per statement (17 columns x 500 is well under).
ROWS_PER_STATEMENT = 500

_STATE = cast(Table, SessionStateRecord.__table__)
_CANDLES = cast(Table, SessionCandleRecord.__table__)
_EQUITY = cast(Table, SessionEquityRecord.__table__)
_ORDERS = cast(Table, SessionOrderRecord.__table__)
_FILLS = cast(Table, SessionFillRecord.__table__)
_POSITIONS = cast(Table, SessionPositionRecord.__table__)
_BALANCES = cast(Table, SessionBalanceRecord.__table__)
_RUNS = cast(Table, RunRecord.__table__)


class StaleTokenError(CracktraderError):
    """Another server took the session over: this writer's fencing token is stale, so nothing was written."""

    code: ClassVar[str] = "SESSION_TAKEN_OVER"
    status_code: ClassVar[int] = 409


def nan_to_none(value: float) -> float | None:
    """NULL for NaN (SQLite stores NaN as NULL anyway; this makes both backends say the same)."""
    return None if value != value else float(value)


def none_to_nan(value: float | None) -> float:
    """NaN for NULL."""
    return math.nan if value is None else float(value)


@dataclass(slots=True)
class SessionDelta:
    """What one bar (or a burst of bars) changed: rows to append or upsert, and the state after it."""

    bars: int
    warmup_bars: int
    last_bar_ts: int | None
    sim_state: str
    strategy_state: str | None
    candles: list[dict[str, Any]] = field(default_factory=list)  # appended
    fills: list[dict[str, Any]] = field(default_factory=list)  # appended, each once
    equity: dict[int, dict[str, Any]] = field(default_factory=dict)  # by ts: the last point may be re-marked
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)  # by order id: the latest state
    positions: dict[str, dict[str, Any]] = field(default_factory=dict)
    balances: dict[str, dict[str, Any]] = field(default_factory=dict)

    def then(self, later: SessionDelta) -> SessionDelta:
        """This delta followed by `later`, as one (a burst written in one transaction)."""
        return SessionDelta(
            later.bars,
            later.warmup_bars,
            later.last_bar_ts,
            later.sim_state,
            later.strategy_state,
            self.candles + later.candles,
            self.fills + later.fills,
            {**self.equity, **later.equity},
            {**self.orders, **later.orders},
            {**self.positions, **later.positions},
            {**self.balances, **later.balances},
        )

    @property
    def size(self) -> int:
        """Rows it writes."""
        return len(self.candles) + len(self.fills) + len(self.equity) + len(self.orders)


@dataclass(frozen=True, slots=True)
class FinalStatus:
    """The run's outcome, written with the session's last rows."""

    status: str
    end_time: str
    ended_at: datetime
    error: str | None = None
    final_value: float | None = None
    total_return: float | None = None
    metrics: dict[str, Any] | None = None


@dataclass(slots=True)
class StoredSession:
    """Everything stored of a session."""

    run_id: str
    owner_server_id: str
    fencing_token: int
    owner_since: datetime
    start_time: str
    end_time: str | None
    bars: int
    warmup_bars: int
    last_bar_ts: int | None
    sim_state: str | None
    strategy_state: str | None
    updated_at: datetime
    candles: list[Any]  # rows (ts, symbol, open, high, low, close, volume, tradable), by ts then symbol
    equity: list[Any]  # rows (ts, value, cash, in_market), by ts
    orders: list[Any]  # session_orders rows, by order id


@dataclass(frozen=True, slots=True)
class Orphan:
    """A session whose owner's lease lapsed: it may be claimed with `seen_token`."""

    run_id: str
    owner_server_id: str
    seen_token: int


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime")
    return value.astimezone(UTC)


async def fence(conn: AsyncConnection, run_id: str, token: int, values: dict[str, Any]) -> None:
    """Update the session's state row if `token` is still current; else raise StaleTokenError (nothing written)."""
    # First statement of the transaction: SQLite takes its write lock here, PostgreSQL locks the row, so a
    # takeover either commits before (and this finds a new token) or waits until this transaction ends.
    result = await conn.execute(
        update(_STATE).where(_STATE.c.run_id == run_id, _STATE.c.fencing_token == token).values(**values)
    )
    if _rowcount(result) == 0:
        raise StaleTokenError(
            f"Session {run_id} is owned by another server now (fencing token {token} is stale)",
            details={"run_id": run_id, "fencing_token": token},
        )


class SessionStore:
    """The session tables; every method is one transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    def _upsert(self, conn: AsyncConnection, table: Table, keys: Sequence[str]) -> Any:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite

        def statement(rows: builtins.list[dict[str, Any]]) -> Any:
            stmt = dialect.insert(table).values(rows)
            changed = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
            return stmt.on_conflict_do_update(index_elements=list(keys), set_=changed)

        return statement

    async def create(self, run_id: str, *, server_id: str, start_time: str, now: datetime) -> int:
        """Record a new session owned by `server_id`; returns its fencing token (1)."""
        at = _utc(now)
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(_STATE).values(
                    run_id=run_id,
                    owner_server_id=server_id,
                    fencing_token=1,
                    owner_since=at,
                    start_time=start_time,
                    end_time=None,
                    bars=0,
                    warmup_bars=0,
                    last_bar_ts=None,
                    sim_state=None,
                    strategy_state=None,
                    updated_at=at,
                )
            )
        return 1

    async def append(
        self, run_id: str, token: int, delta: SessionDelta, *, now: datetime, final: FinalStatus | None = None
    ) -> None:
        """Write what bars changed (and with `final`, the run's outcome) in one transaction, if `token` is current."""
        values: dict[str, Any] = {
            "bars": delta.bars,
            "warmup_bars": delta.warmup_bars,
            "last_bar_ts": delta.last_bar_ts,
            "sim_state": delta.sim_state,
            "strategy_state": delta.strategy_state,
            "updated_at": _utc(now),
        }
        if final is not None:
            values["end_time"] = final.end_time
        async with self._engine.begin() as conn:
            await fence(conn, run_id, token, values)
            await _insert_all(conn, _CANDLES, delta.candles)
            await _insert_all(conn, _FILLS, delta.fills)  # a fill recorded twice breaks uq_session_fills_trade
            for table, keys, rows in (
                (_EQUITY, ("run_id", "ts"), delta.equity.values()),
                (_ORDERS, ("run_id", "order_id"), delta.orders.values()),
                (_POSITIONS, ("run_id", "symbol"), delta.positions.values()),
                (_BALANCES, ("run_id", "currency"), delta.balances.values()),
            ):
                statement = self._upsert(conn, table, keys)
                batch = builtins.list(rows)
                for start in range(0, len(batch), ROWS_PER_STATEMENT):
                    await conn.execute(statement(batch[start : start + ROWS_PER_STATEMENT]))
            if final is not None:
                await conn.execute(
                    update(_RUNS)
                    .where(_RUNS.c.id == run_id)
                    .values(
                        status=final.status,
                        ended_at=_utc(final.ended_at),
                        error=final.error,
                        final_value=final.final_value,
                        total_return=final.total_return,
                        metrics=final.metrics,
                    )
                )

    async def fail(self, run_id: str, token: int, *, error: str, now: datetime) -> None:
        """End a session as failed (one that could not be resumed), if `token` is current."""
        async with self._engine.begin() as conn:
            await fence(conn, run_id, token, {"updated_at": _utc(now)})
            await conn.execute(
                update(_RUNS).where(_RUNS.c.id == run_id).values(status="failed", error=error, ended_at=_utc(now))
            )

    async def orphans(self, *, server_id: str, now: datetime, lease_ttl: timedelta) -> builtins.list[Orphan]:
        """Active paper and live sessions of other servers whose lease lapsed (no heartbeat for `lease_ttl`)."""
        fresh = _utc(now) - lease_ttl
        alive = exists().where(
            ServerRecord.id == SessionStateRecord.owner_server_id, ServerRecord.heartbeat_at >= fresh
        )
        query = (
            select(SessionStateRecord.run_id, SessionStateRecord.owner_server_id, SessionStateRecord.fencing_token)
            .join(RunRecord, RunRecord.id == SessionStateRecord.run_id)
            .where(
                RunRecord.status.in_(ACTIVE),
                RunRecord.mode.in_(("paper", "live")),
                SessionStateRecord.owner_server_id != server_id,
                ~alive,
            )
            .order_by(RunRecord.created_at, RunRecord.id)
        )
        async with self._engine.connect() as conn:
            return [Orphan(str(r), str(o), int(t)) for r, o, t in await conn.execute(query)]

    async def claim(self, orphan: Orphan, *, server_id: str, now: datetime) -> int | None:
        """Take an orphaned session over; its new fencing token, or None when another server was first."""
        token = orphan.seen_token + 1
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(_STATE)
                .where(_STATE.c.run_id == orphan.run_id, _STATE.c.fencing_token == orphan.seen_token)
                .values(owner_server_id=server_id, fencing_token=token, owner_since=_utc(now))
            )
            if _rowcount(result) == 0:
                return None
            # The run is this server's now: the lease sweep judges it by this server's lease.
            await conn.execute(update(_RUNS).where(_RUNS.c.id == orphan.run_id).values(server_id=server_id))
        return token

    async def load(self, run_id: str) -> StoredSession | None:
        """A session's state and its stored bars, equity and orders; None if it has none."""
        async with self._engine.connect() as conn:
            state = (await conn.execute(select(_STATE).where(_STATE.c.run_id == run_id))).first()
            if state is None:
                return None
            candles = (
                await conn.execute(
                    select(
                        _CANDLES.c.ts, _CANDLES.c.symbol, _CANDLES.c.open, _CANDLES.c.high, _CANDLES.c.low,
                        _CANDLES.c.close, _CANDLES.c.volume, _CANDLES.c.tradable,
                    ).where(_CANDLES.c.run_id == run_id).order_by(_CANDLES.c.ts, _CANDLES.c.symbol)
                )
            ).all()  # fmt: skip
            equity = (
                await conn.execute(
                    select(_EQUITY.c.ts, _EQUITY.c.value, _EQUITY.c.cash, _EQUITY.c.in_market)
                    .where(_EQUITY.c.run_id == run_id)
                    .order_by(_EQUITY.c.ts)
                )
            ).all()
            orders = (
                await conn.execute(select(_ORDERS).where(_ORDERS.c.run_id == run_id).order_by(_ORDERS.c.order_id))
            ).all()
        m = state._mapping
        return StoredSession(
            run_id=run_id,
            owner_server_id=m["owner_server_id"],
            fencing_token=int(m["fencing_token"]),
            owner_since=_as_utc(m["owner_since"]),
            start_time=m["start_time"],
            end_time=m["end_time"],
            bars=int(m["bars"]),
            warmup_bars=int(m["warmup_bars"]),
            last_bar_ts=m["last_bar_ts"],
            sim_state=m["sim_state"],
            strategy_state=m["strategy_state"],
            updated_at=_as_utc(m["updated_at"]),
            candles=builtins.list(candles),
            equity=builtins.list(equity),
            orders=builtins.list(orders),
        )

    async def recent_candles(self, run_id: str, symbol: int, limit: int) -> tuple[builtins.list[Any], int]:
        """The last `limit` stored candles (ts, open, high, low, close, volume) of the session's symbol number
        `symbol`, oldest first, and how many it has."""
        where = (_CANDLES.c.run_id == run_id, _CANDLES.c.symbol == symbol)
        async with self._engine.connect() as conn:
            total = int((await conn.execute(select(func.count()).select_from(_CANDLES).where(*where))).scalar_one())
            rows = (
                await conn.execute(
                    select(_CANDLES.c.ts, _CANDLES.c.open, _CANDLES.c.high, _CANDLES.c.low, _CANDLES.c.close,
                           _CANDLES.c.volume).where(*where).order_by(_CANDLES.c.ts.desc()).limit(limit)
                )
            ).all()  # fmt: skip
        return builtins.list(reversed(rows)), total

    async def owner(self, run_id: str) -> tuple[str, int] | None:
        """(owner server, fencing token) of a session."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(_STATE.c.owner_server_id, _STATE.c.fencing_token).where(_STATE.c.run_id == run_id)
                )
            ).first()
        return None if row is None else (str(row[0]), int(row[1]))

    async def has_session(self, run_id: str) -> bool:
        """Whether `run_id` is a session recorded in rows."""
        return await self.owner(run_id) is not None

    async def fills(self, run_id: str) -> builtins.list[dict[str, Any]]:
        """A session's fills in the order they were recorded."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(_FILLS).where(_FILLS.c.run_id == run_id).order_by(_FILLS.c.id))
            return [dict(r._mapping) for r in rows]

    async def positions(self, run_id: str) -> builtins.list[dict[str, Any]]:
        """A session's latest positions, one per symbol."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(_POSITIONS).where(_POSITIONS.c.run_id == run_id).order_by(_POSITIONS.c.symbol)
            )
            return [dict(r._mapping) for r in rows]

    async def balances(self, run_id: str) -> builtins.list[dict[str, Any]]:
        """A session's latest balances, one per currency."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(_BALANCES).where(_BALANCES.c.run_id == run_id).order_by(_BALANCES.c.currency)
            )
            return [dict(r._mapping) for r in rows]


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def _insert_all(conn: AsyncConnection, table: Table, rows: Iterable[dict[str, Any]]) -> None:
    batch = builtins.list(rows)
    for start in range(0, len(batch), ROWS_PER_STATEMENT):
        await conn.execute(insert(table), batch[start : start + ROWS_PER_STATEMENT])
