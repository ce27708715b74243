"""The live orders' store on real SQLite and PostgreSQL: fenced writes, exact numbers, each fill once."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any, get_args

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from cracktrader.brokers.orders import (
    DuplicateOrderError,
    InvalidOrderError,
    ManagedOrder,
    OrderLedger,
    OrderNotFoundError,
    OrderStatus,
    TradeFill,
    exact,
)
from cracktrader.db.live_store import _PENDING_COLUMNS, Intent, LiveOrderStore, exact_text, parse_exact
from cracktrader.db.models import LIVE_INTENTS, LiveOrderRecord
from cracktrader.db.run_store import RunStore
from cracktrader.db.session_store import Orphan, SessionStore, StaleTokenError
from db_support import DatabaseTarget

pytestmark = pytest.mark.anyio
RUN = "0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000_000
NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Live:
    """A live session's rows: its store, the session store beside it, and the current fencing token."""

    target: DatabaseTarget
    engine: AsyncEngine
    store: LiveOrderStore
    sessions: SessionStore
    token: int

    async def count(self, table: str) -> int:
        """Rows in `table`."""
        async with self.engine.connect() as conn:
            return int((await conn.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one())

    async def take_over(self) -> int:
        """Another server claims the session: the token this test holds goes stale."""
        token = await self.sessions.claim(Orphan(RUN, "server-a", self.token), server_id="server-b", now=NOW)
        assert token == self.token + 1
        return token


@pytest.fixture
async def live(target: DatabaseTarget) -> AsyncIterator[Live]:
    """A migrated database of each backend holding one live run with its session state (token 1)."""
    engine = target.engine()
    try:
        await RunStore(engine).create(
            run_id=RUN,
            mode="live",
            status="running",
            config={},
            strategy_name="Test",
            symbols=["BTC/USDT", "ETH/USDT"],
            timeframe="1m",
            exchange="binance",
        )
        sessions = SessionStore(engine)
        token = await sessions.create(RUN, server_id="server-a", start_time="2026-12-01T00:00:00Z", now=NOW)
        yield Live(target, engine, LiveOrderStore(engine), sessions, token)
    finally:
        await engine.dispose()


def _order(cid: str = "ctA1b2c3000001", **changes: Any) -> ManagedOrder:
    fields: dict[str, Any] = {
        "client_order_id": cid,
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "side": "buy",
        "type": "limit",
        "amount": 0.1,
        "price": 30000.1,
        "created_at": T0,
    }
    return ManagedOrder(**{**fields, **changes})


def _fill(trade_id: str, qty: Any, price: Any, *, cid: str = "ctA1b2c3000001", **more: Any) -> TradeFill:
    return TradeFill("binance", "BTC/USDT", trade_id, qty, price, T0 + 1000, client_order_id=cid, **more)


def _working(ledger: OrderLedger, order: ManagedOrder) -> ManagedOrder:
    """`order`, sent and acknowledged by the venue."""
    ledger.add(order)
    ledger.submit(order.client_order_id, T0 + 1)
    ledger.acknowledge(order.client_order_id, "9001", T0 + 2)
    return order


def _same_order(loaded: ManagedOrder, original: ManagedOrder) -> None:
    """Equal field by field, with the same types (a Fraction stays a Fraction, a status an OrderStatus)."""
    for f in dataclasses.fields(ManagedOrder):
        got, want = getattr(loaded, f.name), getattr(original, f.name)
        assert got == want, f.name
        assert type(got) is type(want), f.name
    assert {c: type(v) for c, v in loaded.fees.items()} == {c: Fraction for c in original.fees}


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (0.1, "0.1"),
        (1e-8, "1E-8"),
        (Fraction(1, 3), "1/3"),
        (Fraction(-2, 3), "-2/3"),
        (Decimal("0.10"), "0.1"),
        ("0.00000001", "1E-8"),
        (0.1 + 0.2, "0.30000000000000004"),
        (30000.1, "30000.1"),
        (5, "5"),
        (0, "0"),
        (-0.5, "-0.5"),
        (Fraction(3, 40), "0.075"),
    ],
)
def test_exact_text_writes_the_decimal_a_number_was_given_or_its_fraction(value: Any, written: str) -> None:
    assert exact_text(value) == written
    assert parse_exact(written) == exact(value, "value")


@pytest.mark.parametrize("value", [0.1, 1e-8, 0.1 + 0.2, 5e-324, 1.7976931348623157e308, 123456.789e-20, 2.0**-60])
def test_a_float_comes_back_bit_for_bit(value: float) -> None:
    assert float(parse_exact(exact_text(value))) == value


def test_exact_text_refuses_what_is_not_a_finite_number() -> None:
    with pytest.raises(InvalidOrderError):
        exact_text(float("nan"))


def test_the_intent_type_names_the_intents_the_table_allows() -> None:
    assert get_args(Intent) == LIVE_INTENTS


async def test_a_pending_order_loads_back_equal_field_by_field(live: Live) -> None:
    order = _order(type="stop_limit", amount=1e-8, price=30000.1, stop=29999.9)

    await live.store.insert_pending(RUN, live.token, order, intent="stop_loss", stop_loss=29000.5, take_profit=31000.25)

    (stored,) = await live.store.load(RUN)
    _same_order(stored.order, order)
    assert stored.order.status is OrderStatus.PENDING_NEW
    assert (stored.intent, stored.stop_loss, stored.take_profit, stored.watch_until) == (
        "stop_loss",
        29000.5,
        31000.25,
        None,
    )
    assert await live.store.client_ids(RUN) == {order.client_order_id}


async def test_the_amount_is_stored_as_its_decimal_not_a_float(live: Live) -> None:
    await live.store.insert_pending(RUN, live.token, _order(amount=0.1, price=1e-8))

    async with live.engine.connect() as conn:
        row = (await conn.execute(text("SELECT amount, price, stop, filled_qty, fees FROM live_orders"))).one()
    assert tuple(row) == ("0.1", "1E-8", None, "0", "{}")


async def test_fills_and_fees_in_two_currencies_load_back_as_the_same_fractions(live: Live) -> None:
    ledger = OrderLedger()
    order = _working(ledger, _order(amount=0.3))
    await live.store.insert_pending(RUN, live.token, _order(amount=0.3))
    await live.store.save_order(RUN, live.token, order)
    fills = [
        _fill("t1", 0.1, "30000.1", fee=Fraction(1, 3), fee_currency="BNB"),
        _fill("t2", "0.2", 29999.7, fee=1e-8, fee_currency="USDT"),
    ]
    for fill in fills:
        ledger.apply_fill(fill)
        assert await live.store.record_fill(RUN, live.token, fill, order)

    (stored,) = await live.store.load(RUN)
    _same_order(stored.order, order)
    assert stored.order.status is OrderStatus.FILLED
    assert stored.order.filled_qty == Fraction(3, 10)
    assert stored.order.filled_cost == Fraction("0.1") * Fraction("30000.1") + Fraction("0.2") * Fraction("29999.7")
    assert stored.order.fees == {"BNB": Fraction(1, 3), "USDT": Fraction(1, 10**8)}
    loaded = await live.store.fills(RUN)
    assert [(f.trade_id, f.qty, f.price, f.fee, f.fee_currency) for f in loaded] == [
        ("t1", Fraction(1, 10), Fraction("30000.1"), Fraction(1, 3), "BNB"),
        ("t2", Fraction(2, 10), Fraction("29999.7"), Fraction(1, 10**8), "USDT"),
    ]
    assert {f.exchange_order_id for f in loaded} == {"9001"}  # the order's, when the report named none


async def test_a_second_order_with_the_same_client_id_is_refused_and_the_first_is_kept(live: Live) -> None:
    await live.store.insert_pending(RUN, live.token, _order(amount=0.1))

    with pytest.raises(DuplicateOrderError, match="ctA1b2c3000001"):
        await live.store.insert_pending(RUN, live.token, _order(amount=0.5))

    (stored,) = await live.store.load(RUN)
    assert stored.order.amount == 0.1


async def test_an_unknown_intent_is_refused(live: Live) -> None:
    with pytest.raises(InvalidOrderError, match="intent"):
        await live.store.insert_pending(RUN, live.token, _order(), intent="hedge")  # type: ignore[arg-type]
    assert await live.count("live_orders") == 0


Write = Callable[[LiveOrderStore, int, ManagedOrder], Awaitable[Any]]


async def _insert_other(store: LiveOrderStore, token: int, order: ManagedOrder) -> Any:
    return await store.insert_pending(RUN, token, _order("ctOther00000002"))


async def _save(store: LiveOrderStore, token: int, order: ManagedOrder) -> Any:
    order.status = OrderStatus.CANCELED
    return await store.save_order(RUN, token, order, watch_until=T0)


async def _record(store: LiveOrderStore, token: int, order: ManagedOrder) -> Any:
    fill = _fill("t-late", 0.05, 30000.1)
    order.filled_qty += Fraction(1, 20)
    return await store.record_fill(RUN, token, fill, order)


@pytest.mark.parametrize("write", [_insert_other, _save, _record], ids=["insert_pending", "save_order", "record_fill"])
async def test_a_write_under_a_stale_token_is_refused_and_writes_nothing(live: Live, write: Write) -> None:
    ledger = OrderLedger()
    order = _working(ledger, _order())
    await live.store.insert_pending(RUN, live.token, _order())
    await live.store.save_order(RUN, live.token, order)
    before = await live.store.load(RUN)
    await live.take_over()

    with pytest.raises(StaleTokenError):
        await write(live.store, live.token, order)

    assert (await live.count("live_orders"), await live.count("live_fills")) == (1, 0)
    assert await live.store.load(RUN) == before


async def test_a_fill_recorded_twice_is_counted_once(live: Live) -> None:
    ledger = OrderLedger()
    order = _working(ledger, _order(amount=1.0))
    await live.store.insert_pending(RUN, live.token, _order(amount=1.0))
    fill = _fill("t1", 0.4, 30000.0)
    ledger.apply_fill(fill)
    assert await live.store.record_fill(RUN, live.token, fill, order) is True
    # A restarted session that did not know it was stored applies it once more to its own copy of the order.
    (stored,) = await live.store.load(RUN)
    again = OrderLedger()
    again.add(stored.order)
    again.apply_fill(fill)
    assert stored.order.filled_qty == Fraction(4, 5)

    assert await live.store.record_fill(RUN, live.token, fill, stored.order) is False

    (after,) = await live.store.load(RUN)
    assert after.order.filled_qty == Fraction(2, 5)
    assert after.order.status is OrderStatus.PARTIALLY_FILLED
    assert await live.count("live_fills") == 1


async def test_the_same_fill_recorded_by_two_connections_at_once_is_stored_once(live: Live) -> None:
    ledger = OrderLedger()
    await live.store.insert_pending(RUN, live.token, _order(amount=1.0))
    _working(ledger, _order(amount=1.0))
    fill = _fill("t1", 0.25, 30000.0)
    copies = []
    for _ in range(2):  # each path (the socket, a REST poll) holds its own copy of the order with the fill applied
        copy = OrderLedger()
        copy.add(dataclasses.replace(ledger.get("ctA1b2c3000001"), fees={}))
        copy.apply_fill(fill)
        copies.append(copy.get("ctA1b2c3000001"))
    engines = [live.target.engine(), live.target.engine()]
    try:
        stores = [LiveOrderStore(e) for e in engines]
        writes = (s.record_fill(RUN, live.token, fill, o) for s, o in zip(stores, copies, strict=True))
        results = await asyncio.gather(*writes)
    finally:
        for engine in engines:
            await engine.dispose()

    assert sorted(results) == [False, True]
    assert await live.count("live_fills") == 1
    (stored,) = await live.store.load(RUN)
    assert stored.order.filled_qty == Fraction(1, 4)


async def test_a_fill_of_another_order_is_refused(live: Live) -> None:
    order = _order()
    await live.store.insert_pending(RUN, live.token, order)

    with pytest.raises(InvalidOrderError, match="is not of order"):
        await live.store.record_fill(RUN, live.token, _fill("t1", 0.1, 1.0, cid="ctOther00000002"), order)
    assert await live.count("live_fills") == 0


async def test_saving_an_order_that_was_never_inserted_is_refused(live: Live) -> None:
    with pytest.raises(OrderNotFoundError, match="insert_pending"):
        await live.store.save_order(RUN, live.token, _order())


async def _unconfirmed(live: Live, ledger: OrderLedger, cid: str, watch_until: int | None) -> ManagedOrder:
    order = _order(cid)
    await live.store.insert_pending(RUN, live.token, _order(cid))
    ledger.add(order)
    ledger.submit(cid, T0 + 1)
    ledger.transition(cid, OrderStatus.UNKNOWN, T0 + 2)
    ledger.transition(cid, OrderStatus.REJECTED_UNCONFIRMED, T0 + 30_000)
    await live.store.save_order(RUN, live.token, order, watch_until=watch_until)
    return order


async def test_non_final_orders_include_unconfirmed_ones_only_while_watched(live: Live) -> None:
    ledger = OrderLedger()
    now = T0 + 60_000
    await live.store.insert_pending(RUN, live.token, _order("pending"))
    for cid, ends in (("filled", OrderStatus.FILLED), ("canceled", OrderStatus.CANCELED), ("open", None)):
        order = _working(ledger, _order(cid))
        await live.store.insert_pending(RUN, live.token, _order(cid))
        if ends is OrderStatus.FILLED:
            fill = _fill("t-" + cid, 0.1, 30000.1, cid=cid)
            ledger.apply_fill(fill)
            await live.store.record_fill(RUN, live.token, fill, order)
        elif ends is OrderStatus.CANCELED:
            ledger.cancel(cid, T0 + 3)
        await live.store.save_order(RUN, live.token, order)
    await _unconfirmed(live, ledger, "watched", now + 1)
    await _unconfirmed(live, ledger, "watch-ends-now", now)
    await _unconfirmed(live, ledger, "never-watched", None)

    watched = await live.store.non_final(RUN, now_ms=now)
    assert [s.order.client_order_id for s in watched] == ["open", "pending", "watched"]
    assert [s.watch_until for s in watched] == [None, None, now + 1]
    later = await live.store.non_final(RUN, now_ms=now + 1)
    assert [s.order.client_order_id for s in later] == ["open", "pending"]
    assert len(await live.store.load(RUN)) == 7


async def test_a_fill_of_a_watched_order_brings_it_back_and_ends_its_watch(live: Live) -> None:
    ledger = OrderLedger()
    order = await _unconfirmed(live, ledger, "ctLate0000001", T0 + 86_400_000)
    ledger.acknowledge("ctLate0000001", "9002", T0 + 40_000)  # the venue shows it after all
    fill = _fill("t9", 0.1, 30000.1, cid="ctLate0000001")
    ledger.apply_fill(fill)

    assert await live.store.record_fill(RUN, live.token, fill, order)

    (stored,) = await live.store.load(RUN)
    assert (stored.order.status, stored.order.exchange_order_id, stored.watch_until) == (
        OrderStatus.FILLED,
        "9002",
        None,
    )
    assert await live.store.non_final(RUN, now_ms=T0) == []


async def test_the_last_fill_time_is_per_symbol(live: Live) -> None:
    ledger = OrderLedger()
    assert await live.store.last_fill_ms(RUN, "BTC/USDT") is None
    btc = _working(ledger, _order("btc", amount=1.0))
    eth = _working(ledger, _order("eth", symbol="ETH/USDT", amount=1.0))
    for o in (btc, eth):
        await live.store.insert_pending(RUN, live.token, _order(o.client_order_id, symbol=o.symbol, amount=1.0))
    for order, trade, ts in ((btc, "b2", T0 + 5000), (btc, "b1", T0 + 3000), (eth, "e1", T0 + 9000)):
        fill = TradeFill("binance", order.symbol, trade, 0.1, 100.0, ts, client_order_id=order.client_order_id)
        ledger.apply_fill(fill)
        assert await live.store.record_fill(RUN, live.token, fill, order)

    assert await live.store.last_fill_ms(RUN, "BTC/USDT") == T0 + 5000
    assert await live.store.last_fill_ms(RUN, "ETH/USDT") == T0 + 9000
    assert await live.store.last_fill_ms(RUN, "SOL/USDT") is None
    assert [f.trade_id for f in await live.store.fills(RUN)] == ["b2", "b1", "e1"]  # as recorded


async def test_deleting_the_run_deletes_its_live_orders_and_fills(live: Live) -> None:
    ledger = OrderLedger()
    order = _working(ledger, _order())
    await live.store.insert_pending(RUN, live.token, _order())
    fill = _fill("t1", 0.1, 30000.1)
    ledger.apply_fill(fill)
    await live.store.record_fill(RUN, live.token, fill, order)

    assert await RunStore(live.engine).delete(RUN)

    assert (await live.count("live_orders"), await live.count("live_fills")) == (0, 0)
    assert await live.store.client_ids(RUN) == set()


async def test_the_table_itself_refuses_a_second_row_for_one_trade(live: Live) -> None:
    await live.store.insert_pending(RUN, live.token, _order())
    insert = text(
        "INSERT INTO live_fills (run_id, exchange, symbol, trade_id, client_order_id, qty, price, fee, timestamp) "
        "VALUES (:run, 'binance', 'BTC/USDT', 't1', 'ctA1b2c3000001', '0.1', '1', '0', 0)"
    )
    async with live.engine.begin() as conn:
        await conn.execute(insert, {"run": RUN})

    with pytest.raises(IntegrityError):
        async with live.engine.begin() as conn:
            await conn.execute(insert, {"run": RUN})
    assert await live.count("live_fills") == 1


async def test_a_pending_insert_during_a_takeover_waits_for_it_and_then_writes_nothing(live: Live) -> None:
    # The token check is inside the insert's one statement: it must wait for a takeover in progress, not read the
    # old token beside it and write.
    other = live.target.engine()
    try:
        async with other.connect() as takeover:
            await takeover.begin()
            await takeover.execute(
                text("UPDATE session_state SET fencing_token = fencing_token + 1 WHERE run_id = :r"), {"r": RUN}
            )
            insert = asyncio.create_task(live.store.insert_pending(RUN, live.token, _order()))
            done, _ = await asyncio.wait({insert}, timeout=0.3)
            assert not done  # held back by the takeover's lock
            await takeover.commit()

            with pytest.raises(StaleTokenError):
                await insert
    finally:
        await other.dispose()
    assert await live.count("live_orders") == 0


def test_the_pending_insert_writes_every_column_of_the_table() -> None:
    assert set(_PENDING_COLUMNS) == {c.name for c in LiveOrderRecord.__table__.columns}


async def test_a_held_line_refuses_duplicates_and_stale_tokens_as_a_pooled_write_does(live: Live) -> None:
    await live.store.hold()
    try:
        await live.store.insert_pending(RUN, live.token, _order(amount=0.1))
        with pytest.raises(DuplicateOrderError, match="ctA1b2c3000001"):
            await live.store.insert_pending(RUN, live.token, _order(amount=0.5))
        await live.take_over()
        with pytest.raises(StaleTokenError):
            await live.store.insert_pending(RUN, live.token, _order("ctOther00000002"))
    finally:
        await live.store.close()

    (stored,) = await live.store.load(RUN)
    assert stored.order.amount == 0.1


async def test_orders_written_at_once_with_a_held_line_are_all_stored(live: Live) -> None:
    await live.store.hold()
    try:
        cids = [f"ctA1b2c300000{k}" for k in range(6)]
        await asyncio.gather(*(live.store.insert_pending(RUN, live.token, _order(cid)) for cid in cids))
    finally:
        await live.store.close()

    assert sorted(s.order.client_order_id for s in await live.store.load(RUN)) == cids


async def test_a_held_line_the_database_closed_fails_one_write_and_the_next_opens_another(live: Live) -> None:
    if live.engine.dialect.name != "postgresql":
        pytest.skip("a server closing one connection: PostgreSQL's pg_terminate_backend")
    await live.store.hold()
    try:
        await live.store.insert_pending(RUN, live.token, _order("ctA1b2c3000001"))
        line = live.store._line  # the held connection, to end it from the server's side
        assert line is not None
        pid = (await line.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        async with live.engine.connect() as conn:
            assert (await conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})).scalar_one() is True

        with pytest.raises(DBAPIError):  # asyncpg's words for it vary with what it was doing
            await live.store.insert_pending(RUN, live.token, _order("ctA1b2c3000002"))
        await live.store.insert_pending(RUN, live.token, _order("ctA1b2c3000003"))
    finally:
        await live.store.close()

    stored = sorted(s.order.client_order_id for s in await live.store.load(RUN))
    assert stored == ["ctA1b2c3000001", "ctA1b2c3000003"]
