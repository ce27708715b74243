"""A live session's orders and fills, every write fenced by the session's token; numbers stored as exact text.

An order is inserted `pending_new` before it is sent, in the transaction that checks the fencing token, so a
server that lost the session sends nothing it did not record. A fill is inserted once: the unique key (run,
exchange, symbol, trade id) decides, so two code paths reporting the same trade at once count it once.
"""

from __future__ import annotations

import asyncio
import builtins
import json
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam, exists, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cracktrader.brokers.orders import (
    FINAL_STATES,
    DuplicateOrderError,
    Intent,
    InvalidOrderError,
    ManagedOrder,
    Number,
    OrderNotFoundError,
    OrderStatus,
    TradeFill,
    exact,
)
from cracktrader.db.models import LIVE_INTENTS, LiveFillRecord, LiveOrderRecord, SessionStateRecord
from cracktrader.db.session_store import fence

__all__ = ["Intent", "LiveOrderStore", "StoredLiveOrder", "exact_text", "parse_exact"]

# The values of LIVE_INTENTS (the table checks them), as a type.

_ORDERS = cast(Table, LiveOrderRecord.__table__)
_FILLS = cast(Table, LiveFillRecord.__table__)
_STATE = cast(Table, SessionStateRecord.__table__)
_FINAL = tuple(str(s) for s in FINAL_STATES)
_UNCONFIRMED = str(OrderStatus.REJECTED_UNCONFIRMED)


def exact_text(value: Number) -> str:
    """`value` exactly, as text: its decimal notation when it has one ("0.1", "1E-8"), else "num/den" ("1/3").

    A float is taken by its shortest repr (0.1 is "0.1", not the binary value's 55 digits), as `exact` does.
    """
    f = exact(value, "value")
    rest, twos, fives = f.denominator, 0, 0
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    if rest != 1:
        return f"{f.numerator}/{f.denominator}"
    places = max(twos, fives)
    # Exact: the denominator divides 10**places. Decimal from a string never rounds.
    digits = f.numerator * 10**places // f.denominator
    return str(Decimal(f"{digits}E-{places}"))


def parse_exact(text: str) -> Fraction:
    """The exact number `exact_text` wrote ("0.1", "1E-8", "1/3")."""
    return Fraction(text)


def _fees_text(fees: dict[str, Fraction]) -> str:
    return json.dumps({cur: exact_text(v) for cur, v in sorted(fees.items())}, separators=(",", ":"))


def _fees(text: str) -> dict[str, Fraction]:
    return {cur: parse_exact(v) for cur, v in json.loads(text).items()}


def _optional(value: Number | None) -> str | None:
    return None if value is None else exact_text(value)


def _float(text: str | None) -> float | None:
    # Correctly rounded (int / int), so the float an order was given comes back bit for bit.
    return None if text is None else float(parse_exact(text))


@dataclass(frozen=True, slots=True)
class StoredLiveOrder:
    """A stored live order: the order as it was saved, why it was sent and the levels the session manages."""

    order: ManagedOrder
    intent: Intent
    stop_loss: float | None
    take_profit: float | None
    watch_until: int | None  # ms; set while a `rejected_unconfirmed` order is watched
    bar_ms: int | None = None  # open time of the bar the strategy decided it on


def _state(order: ManagedOrder, watch_until: int | None) -> dict[str, Any]:
    """The columns that change over an order's life."""
    return {
        "status": str(order.status),
        "exchange_order_id": order.exchange_order_id,
        "filled_qty": exact_text(order.filled_qty),
        "filled_cost": exact_text(order.filled_cost),
        "fees": _fees_text(order.fees),
        "reason": order.reason,
        "updated_at": order.updated_at if order.updated_at is not None else order.created_at,
        "watch_until": watch_until,
    }


def _stored(row: Any) -> StoredLiveOrder:
    m = row._mapping
    order = ManagedOrder(
        client_order_id=m["client_order_id"],
        exchange=m["exchange"],
        symbol=m["symbol"],
        side=m["side"],
        type=m["type"],
        amount=float(parse_exact(m["amount"])),
        created_at=int(m["created_at"]),
        price=_float(m["price"]),
        stop=_float(m["stop"]),
        exchange_order_id=m["exchange_order_id"],
        status=OrderStatus(m["status"]),
        updated_at=int(m["updated_at"]),
        reason=m["reason"],
        filled_qty=parse_exact(m["filled_qty"]),
        filled_cost=parse_exact(m["filled_cost"]),
        fees=_fees(m["fees"]),
    )
    return StoredLiveOrder(order, m["intent"], m["stop_loss"], m["take_profit"], m["watch_until"], m["bar_ms"])


def _fill(row: Any) -> TradeFill:
    m = row._mapping
    return TradeFill(
        exchange=m["exchange"],
        symbol=m["symbol"],
        trade_id=m["trade_id"],
        qty=parse_exact(m["qty"]),
        price=parse_exact(m["price"]),
        timestamp=int(m["timestamp"]),
        client_order_id=m["client_order_id"],
        exchange_order_id=m["exchange_order_id"],
        fee=parse_exact(m["fee"]),
        fee_currency=m["fee_currency"],
    )


def _insert(conn: AsyncConnection, table: Table) -> Any:
    """The dialect's INSERT, which has ON CONFLICT."""
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


# The columns insert_pending writes (its row's keys: every column of the table), in the statement's order.
_PENDING_COLUMNS = ("run_id", "client_order_id", "exchange", "symbol", "side", "type", "amount", "price", "stop",
                    "intent", "stop_loss", "take_profit", "created_at", "status", "exchange_order_id", "filled_qty",
                    "filled_cost", "fees", "reason", "updated_at", "watch_until", "bar_ms")  # fmt: skip

_STATEMENTS: dict[str, Any] = {}


def _fenced_insert(dialect: str) -> Any:
    """INSERT ... SELECT of one pending row, only while the token is current; ON CONFLICT DO NOTHING. Built once.

    The token check is inside the statement: SQLite's INSERT holds the write lock while it runs, and PostgreSQL's
    subquery locks the state row as the fence's UPDATE does (FOR NO KEY UPDATE), so a takeover either commits
    before (no row is written) or waits until this one has committed.
    """
    stmt = _STATEMENTS.get(dialect)
    if stmt is None:
        current = select(_STATE.c.run_id).where(
            _STATE.c.run_id == bindparam("run_id"), _STATE.c.fencing_token == bindparam("fence_token")
        )
        values = select(*(bindparam(c, type_=_ORDERS.c[c].type) for c in _PENDING_COLUMNS)).where(
            exists(current.with_for_update(key_share=True))
        )
        ins = (postgresql if dialect == "postgresql" else sqlite).insert(_ORDERS)
        # ON CONFLICT rather than catching IntegrityError: a duplicate is told apart from any other failure.
        stmt = _STATEMENTS[dialect] = ins.from_select(list(_PENDING_COLUMNS), values).on_conflict_do_nothing()
    return stmt


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


class LiveOrderStore:
    """The live_orders and live_fills tables; every method is one transaction, every write fenced."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._held = False
        self._line: AsyncConnection | None = None
        self._line_lock = asyncio.Lock()

    async def hold(self) -> None:
        """Keep one connection for `insert_pending`: the order path then pays no pool checkout, ping or reset."""
        self._held = True
        await self._open_line()

    async def close(self) -> None:
        """Give the held connection back."""
        self._held = False
        line, self._line = self._line, None
        if line is not None:
            await line.close()

    async def _open_line(self) -> AsyncConnection:
        conn = await self._engine.connect()
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        if conn.dialect.name == "sqlite":
            # A checkpoint runs inside the commit that crosses the WAL's threshold, fsync included: let the
            # session's other writes (every bar's rows) take it, never an order on its way out.
            await conn.execute(text("PRAGMA wal_autocheckpoint=0"))
        else:
            # The durability SQLite's WAL with synchronous=NORMAL has: safe against this process dying, not
            # against the database server's host losing power in the ~0.2 s before its WAL writer flushes. An
            # order sent in that window is still found: reconciliation adopts the venue's orders that carry the
            # session's tag. What it saves is the WAL fsync on the path of every order.
            await conn.execute(text("SET synchronous_commit TO off"))
        self._line = conn
        return conn

    async def _fence(self, conn: AsyncConnection, run_id: str, token: int) -> None:
        # A no-op update of the state row: it checks the token and takes the lock, changing nothing.
        await fence(conn, run_id, token, {"fencing_token": token})

    async def insert_pending(
        self,
        run_id: str,
        token: int,
        order: ManagedOrder,
        *,
        intent: Intent = "signal",
        stop_loss: float | None = None,
        take_profit: float | None = None,
        bar_ms: int | None = None,
    ) -> None:
        """Record a new order before it is sent. StaleTokenError or DuplicateOrderError: nothing written."""
        if intent not in LIVE_INTENTS:
            raise InvalidOrderError(
                f"intent must be one of {', '.join(LIVE_INTENTS)}, got {intent!r}", details={"field": "intent"}
            )
        row = {
            "run_id": run_id,
            "client_order_id": order.client_order_id,
            "exchange": order.exchange,
            "symbol": order.symbol,
            "side": order.side,
            "type": order.type,
            "amount": exact_text(order.amount),
            "price": _optional(order.price),
            "stop": _optional(order.stop),
            "intent": intent,
            "stop_loss": stop_loss,
            "take_profit": take_profit,
            "created_at": order.created_at,
            "bar_ms": bar_ms,
            **_state(order, None),
        }
        params = {**row, "fence_token": token}
        if self._held and not self._line_lock.locked():
            async with self._line_lock:  # taken at once: it was free and nothing awaited since
                line = self._line or await self._open_line()
                try:
                    await self._write_pending(line, run_id, token, params)
                except DBAPIError:
                    # The connection may be broken: the next order opens another one.
                    self._line = None
                    await line.invalidate()
                    raise
            return
        async with self._engine.connect() as conn:
            # Committed on its own: on the path of every order before its send, each statement (and BEGIN and
            # COMMIT) would be another round trip.
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await self._write_pending(conn, run_id, token, params)

    async def _write_pending(self, conn: AsyncConnection, run_id: str, token: int, params: dict[str, Any]) -> None:
        result = await conn.execute(_fenced_insert(conn.dialect.name), params)
        if _rowcount(result) == 0:
            # Nothing written: a stale token (the fence's error), else a duplicate client id.
            await self._fence(conn, run_id, token)
            raise DuplicateOrderError(
                f"session {run_id} already stored an order with client_order_id {params['client_order_id']!r}",
                details={"run_id": run_id, "order_id": params["client_order_id"]},
            )

    async def save_order(self, run_id: str, token: int, order: ManagedOrder, *, watch_until: int | None = None) -> None:
        """Store an order's status, exchange id, fill totals, fees and reason; `watch_until` replaces the stored one."""
        async with self._engine.begin() as conn:
            await self._fence(conn, run_id, token)
            await self._save(conn, run_id, order, watch_until)

    async def _save(self, conn: AsyncConnection, run_id: str, order: ManagedOrder, watch_until: int | None) -> None:
        result = await conn.execute(
            update(_ORDERS)
            .where(_ORDERS.c.run_id == run_id, _ORDERS.c.client_order_id == order.client_order_id)
            .values(**_state(order, watch_until))
        )
        if _rowcount(result) == 0:
            raise OrderNotFoundError(
                f"session {run_id} has no stored order {order.client_order_id!r} (insert_pending comes first)",
                details={"run_id": run_id, "order_id": order.client_order_id},
            )

    async def record_fill(self, run_id: str, token: int, fill: TradeFill, order: ManagedOrder) -> bool:
        """Store a fill once and `order` (with the fill applied) with it; False, order untouched, if it was stored."""
        if fill.client_order_id not in (None, order.client_order_id) or (fill.exchange, fill.symbol) != (
            order.exchange,
            order.symbol,
        ):
            raise InvalidOrderError(
                f"fill {fill.trade_id} ({fill.exchange} {fill.symbol}, order {fill.client_order_id}) is not of order "
                f"{order.client_order_id} ({order.exchange} {order.symbol})",
                details={"trade_id": fill.trade_id, "order_id": order.client_order_id},
            )
        row = {
            "run_id": run_id,
            "exchange": fill.exchange,
            "symbol": fill.symbol,
            "trade_id": fill.trade_id,
            "client_order_id": order.client_order_id,
            "exchange_order_id": fill.exchange_order_id or order.exchange_order_id,
            "qty": exact_text(fill.qty),
            "price": exact_text(fill.price),
            "fee": exact_text(fill.fee),
            "fee_currency": fill.fee_currency,
            "timestamp": fill.timestamp,
        }
        async with self._engine.begin() as conn:
            await self._fence(conn, run_id, token)
            result = await conn.execute(_insert(conn, _FILLS).values(row).on_conflict_do_nothing())
            if _rowcount(result) == 0:
                return False
            # A filled order is no longer watched: a fill is evidence that it exists.
            await self._save(conn, run_id, order, None)
        return True

    async def load(self, run_id: str) -> builtins.list[StoredLiveOrder]:
        """A session's orders, oldest first."""
        query = select(_ORDERS).where(_ORDERS.c.run_id == run_id)
        return await self._orders(query)

    async def non_final(self, run_id: str, *, now_ms: int) -> builtins.list[StoredLiveOrder]:
        """Orders that may still change: not filled, canceled, expired or rejected; unconfirmed ones while watched."""
        watched = (_ORDERS.c.status != _UNCONFIRMED) | (_ORDERS.c.watch_until > now_ms)
        query = select(_ORDERS).where(_ORDERS.c.run_id == run_id, _ORDERS.c.status.not_in(_FINAL), watched)
        return await self._orders(query)

    async def _orders(self, query: Any) -> builtins.list[StoredLiveOrder]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(query.order_by(_ORDERS.c.created_at, _ORDERS.c.client_order_id))
            return [_stored(r) for r in rows]

    async def fills(self, run_id: str) -> builtins.list[TradeFill]:
        """A session's fills in the order they were recorded, numbers as exact fractions."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(_FILLS).where(_FILLS.c.run_id == run_id).order_by(_FILLS.c.id))
            return [_fill(r) for r in rows]

    async def last_fill_ms(self, run_id: str, symbol: str) -> int | None:
        """Timestamp of the session's latest stored fill in `symbol`, where a trades gap-fill starts."""
        query = select(func.max(_FILLS.c.timestamp)).where(_FILLS.c.run_id == run_id, _FILLS.c.symbol == symbol)
        async with self._engine.connect() as conn:
            value = (await conn.execute(query)).scalar_one()
        return None if value is None else int(value)

    async def client_ids(self, run_id: str) -> set[str]:
        """Every client order id the session stored (a new id must not be one of them)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(_ORDERS.c.client_order_id).where(_ORDERS.c.run_id == run_id))
            return {str(r[0]) for r in rows}
