"""The live order path against the misbehaving fake venue, with the real ccxt client and the real store.

Every scenario runs on both of the venue's protocols (binance, and okx: tests/fakes/okx.py) and ends with the
database equal to the venue and exactly one venue order per intent.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cracktrader.brokers.live import LiveOrders, OrderIntent
from cracktrader.brokers.live_session import LiveSession
from cracktrader.brokers.orders import ManagedOrder, OrderStatus
from cracktrader.brokers.risk import RiskGate, parse_risk_limits
from cracktrader.data.feeds.base import ClosedCandle
from cracktrader.db.live_store import LiveOrderStore
from cracktrader.db.run_store import RunStore
from cracktrader.db.session_store import SessionStore
from cracktrader.engine.broker import SimSettings
from cracktrader.exchanges.client_ids import session_tag
from cracktrader.exchanges.markets import rules_from_market
from cracktrader.exchanges.order_calls import OrderCalls
from cracktrader.exchanges.rate_gate import RateGate
from cracktrader.strategies.builtin import SmaCross
from db_support import DatabaseTarget
from fakes.binance import candle
from fakes.okx import VENUE_STATUS as OKX_STATUS
from fakes.okx import OkxVenue, okx_client
from fakes.trading import VENUE_STATUS, TradingVenue, VenueTime, trading_client

pytestmark = pytest.mark.anyio

RUN = "5e551011a1a1a1a1a1a1a1a1a1a1a1a1"
T0 = 1_717_243_200_000  # 2024-06-01T12:00:00Z
SYMBOL = "BTC/USDT"
NOW = datetime(2026, 12, 1, tzinfo=UTC)
# ccxt's wait for an answer the venue holds back (accept_then_timeout): real time, kept short.
HELD_TIMEOUT_MS = 300


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["binance", "okx"])
def venue(request: pytest.FixtureRequest) -> Iterator[TradingVenue]:
    cls = OkxVenue if request.param == "okx" else TradingVenue
    with cls(now_ms=T0 + 30_000, balances={"USDT": "10000", "BTC": "0"}) as server:
        yield server


def exchange_of(venue: TradingVenue) -> str:
    """The ccxt exchange id the venue is reached as."""
    return "okx" if isinstance(venue, OkxVenue) else "binance"


@dataclass
class Live:
    """One live session's order path: the venue, the orders, the session they book into, the rows."""

    venue: TradingVenue
    orders: LiveOrders
    session: LiveSession
    calls: OrderCalls
    clock: VenueTime
    engine: AsyncEngine
    store: LiveOrderStore

    async def rows(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            result = await conn.execute(
                text("SELECT client_order_id, status, exchange_order_id, filled_qty FROM live_orders ORDER BY 1")
            )
            return [dict(r._mapping) for r in result]

    async def fill_count(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(text("SELECT COUNT(*) FROM live_fills"))).scalar_one())

    def venue_orders(self) -> list[Any]:
        return [o for o in self.venue.account.orders.values() if not o.external]

    async def assert_equals_venue(self) -> None:
        """The rows hold exactly the venue's orders of the session, each in the venue's state and filled amount."""
        stored = {r["exchange_order_id"]: r for r in await self.rows() if r["exchange_order_id"] is not None}
        on_venue = {str(o.order_id): o for o in self.venue_orders()}
        assert set(stored) == set(on_venue)
        for xid, o in on_venue.items():
            statuses = OKX_STATUS if isinstance(self.venue, OkxVenue) else VENUE_STATUS
            assert stored[xid]["status"] == statuses[o.status], xid
            assert Decimal(_decimal(stored[xid]["filled_qty"])) == o.executed
        assert await self.fill_count() == sum(len(o.trades) for o in self.venue_orders())


def _decimal(text_value: str) -> str:
    if "/" in text_value:
        num, den = text_value.split("/")
        return str(Decimal(num) / Decimal(den))
    return text_value


@asynccontextmanager
async def live_path(venue: TradingVenue, target: DatabaseTarget, *, capital: float = 1_000.0) -> AsyncIterator[Live]:
    engine = target.engine()
    exchange = exchange_of(venue)
    client = okx_client(venue, "pro") if isinstance(venue, OkxVenue) else trading_client(venue, "pro")
    clock = VenueTime(venue)
    try:
        await RunStore(engine).create(run_id=RUN, mode="live", status="running", config={}, strategy_name="SmaCross",
                                      symbols=[SYMBOL], timeframe="1m", exchange=exchange)  # fmt: skip
        token = await SessionStore(engine).create(RUN, server_id="a", start_time="2026-12-01T00:00:00Z", now=NOW)
        calls = OrderCalls(client, exchange, clock, RateGate(clock))
        markets = await client.load_markets()
        rules = {SYMBOL: rules_from_market(markets[SYMBOL], int(client.precisionMode), default_fee=0.001)}
        session = LiveSession(
            SmaCross({}), (SYMBOL,), SimSettings(initial_cash=capital), 525_600.0,
            risk=RiskGate(parse_risk_limits(None), clock.now_ms), timeframe_ms=60_000,
        )  # fmt: skip
        open_ms = T0 - 60_000
        _, o, h, lo, c, v = candle(SYMBOL, "1m", open_ms)
        session.warm(open_ms, {SYMBOL: ClosedCandle(o, h, lo, c, v)})
        store = LiveOrderStore(engine)
        orders = LiveOrders(run_id=RUN, token=lambda: token, exchange=exchange, tag=session_tag(RUN), calls=calls,
                            store=store, clock=clock, portfolio=session, rules=rules)  # fmt: skip
        session.orders = orders
        orders.last_prices[SYMBOL] = c
        yield Live(venue, orders, session, calls, clock, engine, store)
    finally:
        await client.close()
        await engine.dispose()


def _buy(amount: float = 0.001, price: float | None = None) -> OrderIntent:
    return OrderIntent(SYMBOL, "buy", "limit" if price is not None else "market", amount, price)


async def test_a_market_buy_is_stored_pending_new_before_its_request_leaves_and_booked_once(
    venue: TradingVenue, target: DatabaseTarget
) -> None:
    async with live_path(venue, target) as live:
        seen_at_send: list[list[dict[str, Any]]] = []
        create = live.calls.create

        async def spying_create(order: ManagedOrder) -> Any:
            seen_at_send.append(await live.rows())  # what the database holds as the request leaves
            return await create(order)

        live.calls.create = spying_create  # type: ignore[method-assign]
        order = await live.orders.place(_buy(0.001))

        assert seen_at_send == [[{"client_order_id": order.client_order_id, "status": "pending_new",
                                  "exchange_order_id": None, "filled_qty": "0"}]]  # fmt: skip
        assert order.status is OrderStatus.FILLED
        assert len(live.venue_orders()) == 1
        assert live.venue_orders()[0].client_id == order.client_order_id
        # The fee is taken in BTC (the asset received): the session holds what the venue credited.
        trade = live.venue_orders()[0].trades[0]
        assert live.session.position(SYMBOL) == pytest.approx(float(trade.qty - trade.commission))
        assert live.session.cash == pytest.approx(1_000.0 - float(trade.qty * trade.price))
        await live.assert_equals_venue()


# "send status unknown" in each venue's words: binance -1007, okx 50004 (both ccxt RequestTimeout).
STATUS_UNKNOWN = {"binance": "accept_then_1007", "okx": "accept_then_50004"}


@pytest.mark.parametrize("fault", ["accept_then_timeout", "accept_then_503", "accept_then_status_unknown"])
async def test_an_order_accepted_then_unanswered_is_looked_up_never_resent_and_takes_the_venues_state(
    venue: TradingVenue, target: DatabaseTarget, fault: str
) -> None:
    async with live_path(venue, target) as live:
        getattr(venue, STATUS_UNKNOWN[exchange_of(venue)] if fault == "accept_then_status_unknown" else fault)()
        if fault == "accept_then_timeout":
            live.calls.client.timeout = HELD_TIMEOUT_MS
        order = await live.orders.place(_buy(0.001, price=10_000.0))  # rests: far under the market (about 43,000)
        live.calls.client.timeout = 5_000

        assert order.status is OrderStatus.OPEN
        assert order.exchange_order_id == str(live.venue_orders()[0].order_id)
        assert live.orders.sent == 1 and len(live.venue_orders()) == 1
        await live.assert_equals_venue()


async def test_an_order_the_venue_never_took_becomes_rejected_unconfirmed_and_is_watched_for_a_day(
    venue: TradingVenue, target: DatabaseTarget
) -> None:
    async with live_path(venue, target) as live:
        venue.refuse_with_503()
        start = live.clock.now_ms()
        order = await live.orders.place(_buy(0.001, price=10_000.0))

        assert order.status is OrderStatus.REJECTED_UNCONFIRMED
        assert live.venue_orders() == [] and live.orders.sent == 1
        # Looked up at 0.5, 1, 2, 4, 8 and 16 s (virtual): 31.5 s, then the open orders.
        assert live.clock.now_ms() - start >= 31_500
        assert live.orders.watch_until[order.client_order_id] == pytest.approx(
            live.clock.now_ms() + 24 * 3600_000, abs=1_000
        )
        rows = await live.rows()
        assert [r["status"] for r in rows] == ["rejected_unconfirmed"]
        # It holds no capital and no order slot.
        assert live.orders.ledger.open_orders() == []


async def test_an_order_invisible_for_3_s_after_a_timeout_is_found_by_a_later_lookup(
    venue: TradingVenue, target: DatabaseTarget
) -> None:
    async with live_path(venue, target) as live:
        venue.hide_next_order(3.0)
        venue.accept_then_503()
        order = await live.orders.place(_buy(0.001, price=10_000.0))

        assert order.status is OrderStatus.OPEN
        assert len(live.venue_orders()) == 1 and live.orders.sent == 1
        await live.assert_equals_venue()


async def test_a_refusal_the_venue_proves_is_rejected_with_its_code_and_never_resent(
    venue: TradingVenue, target: DatabaseTarget
) -> None:
    venue.set_balance("USDT", "1")  # the account cannot pay for what the session's capital allows
    async with live_path(venue, target) as live:
        order = await live.orders.place(_buy(0.001))

        assert order.status is OrderStatus.REJECTED
        assert order.reason == "INSUFFICIENT_FUNDS"
        assert live.orders.sent == 1 and live.venue_orders() == []
        assert [r["status"] for r in await live.rows()] == ["rejected"]


@pytest.mark.parametrize(
    ("intent", "reason"),
    [
        (_buy(0.00001), "BELOW_MIN_NOTIONAL"),  # 0.00001 BTC is well under 5 USDT
        (_buy(1.0), "INSUFFICIENT_CAPITAL"),  # a whole BTC is more than the 1,000 USDT allocated
        (OrderIntent(SYMBOL, "sell", "market", 0.001), "INSUFFICIENT_POSITION"),
    ],
)
async def test_local_checks_reject_with_the_reason_and_send_nothing(
    venue: TradingVenue, target: DatabaseTarget, intent: OrderIntent, reason: str
) -> None:
    if reason == "BELOW_MIN_NOTIONAL" and isinstance(venue, OkxVenue):
        # OKX has no minimum notional, only a minimum size (minSz, 0.00001 BTC): under it nothing goes out either.
        intent, reason = _buy(0.000004), "BELOW_MIN_AMOUNT"
    async with live_path(venue, target) as live:
        order = await live.orders.place(intent)

        assert (order.status, order.reason) == (OrderStatus.REJECTED, reason)
        assert live.orders.sent == 0 and live.venue_orders() == []


async def test_a_second_buy_of_the_symbol_waits_while_the_first_is_unknown(
    venue: TradingVenue, target: DatabaseTarget
) -> None:
    async with live_path(venue, target) as live:
        venue.hide_next_order(3.0)
        venue.accept_then_503()
        sent_while_unknown: list[int] = []
        create = live.calls.create

        async def counting_create(order: ManagedOrder) -> Any:
            sent_while_unknown.append(len(live.orders.unknown_orders()))
            return await create(order)

        live.calls.create = counting_create  # type: ignore[method-assign]
        first, second = await asyncio.gather(
            live.orders.place(_buy(0.001, price=10_000.0)), live.orders.place(_buy(0.001, price=10_001.0))
        )

        assert sent_while_unknown == [0, 0]  # the second went out only once the first was found
        assert (first.status, second.status) == (OrderStatus.OPEN, OrderStatus.OPEN)
        assert len(live.venue_orders()) == 2
        await live.assert_equals_venue()


async def test_the_same_fill_from_the_response_the_socket_and_rest_counts_once(
    venue: TradingVenue, target: DatabaseTarget
) -> None:
    async with live_path(venue, target) as live:
        order = await live.orders.place(_buy(0.002))
        position = live.session.position(SYMBOL)
        trades = await live.calls.trades(SYMBOL, T0)

        assert await live.orders.apply_trades(trades) == 0  # REST brings them again
        assert await live.orders.apply_trades(trades) == 0  # and so does the socket
        assert live.session.position(SYMBOL) == position
        assert order.filled == pytest.approx(0.002)
        await live.assert_equals_venue()


async def test_a_cancel_that_meets_a_fill_ends_filled_with_the_fill_recorded(
    venue: TradingVenue, target: DatabaseTarget
) -> None:
    async with live_path(venue, target) as live:
        order = await live.orders.place(_buy(0.001, price=10_000.0))
        venue.fill_order(order.client_order_id, SYMBOL)  # the market reached it just before the cancel

        await live.orders.cancel(order.client_order_id)

        assert order.status is OrderStatus.FILLED
        assert order.filled == pytest.approx(0.001)
        await live.assert_equals_venue()


async def test_orders_and_fills_restored_from_the_rows_are_the_ones_stored(
    venue: TradingVenue, target: DatabaseTarget
) -> None:
    async with live_path(venue, target) as live:
        await live.orders.place(_buy(0.002))
        resting = await live.orders.place(_buy(0.001, price=10_000.0))
        stored = await live.store.load(RUN)
        fills = await live.store.fills(RUN)
        fresh = LiveOrders(run_id=RUN, token=lambda: 1, exchange=live.calls.exchange_id, tag=session_tag(RUN),
                           calls=live.calls, store=live.store, clock=live.clock, portfolio=live.session)  # fmt: skip
        fresh.restore([(s.order, _intent(s.order), s.watch_until) for s in stored], fills)

        assert {o.client_order_id: (o.status, o.filled_qty) for o in fresh.ledger} == {
            o.client_order_id: (o.status, o.filled_qty) for o in live.orders.ledger
        }
        assert [o.client_order_id for o in fresh.ledger.open_orders()] == [resting.client_order_id]
        # A fill seen again after the restart is a duplicate, and the next order number follows the stored ones.
        assert await fresh.apply_trades(await live.calls.trades(SYMBOL, T0)) == 0
        assert fresh.last_sequence == live.orders.last_sequence


def _intent(order: ManagedOrder) -> OrderIntent:
    return OrderIntent(order.symbol, order.side, order.type, order.amount, order.price)


async def test_stop_loss_and_take_profit_are_held_by_the_session_and_survive_a_restore(
    venue: TradingVenue, target: DatabaseTarget
) -> None:
    async with live_path(venue, target) as live:
        entry = OrderIntent(SYMBOL, "buy", "market", 0.002, stop_loss=0.02, take_profit=0.05)
        order = await live.orders.place(entry)
        avg = order.average_price
        assert avg is not None
        bracket = live.orders.brackets[order.client_order_id]
        assert (bracket.stop_loss, bracket.take_profit) == (pytest.approx(avg * 0.98), pytest.approx(avg * 1.05))

        # Restored from the rows (a restart), the levels are the same.
        stored = await live.store.load(RUN)
        fresh = LiveOrders(run_id=RUN, token=lambda: 1, exchange=live.calls.exchange_id, tag=session_tag(RUN),
                           calls=live.calls, store=live.store, clock=live.clock, portfolio=live.session)  # fmt: skip
        fresh.restore(
            [(s.order, OrderIntent(SYMBOL, s.order.side, s.order.type, s.order.amount, intent=s.intent,
                                   stop_loss=s.stop_loss, take_profit=s.take_profit), s.watch_until) for s in stored],
            await live.store.fills(RUN),
        )  # fmt: skip
        assert fresh.brackets == live.orders.brackets

        # A closed candle whose low reaches the stop: the session sells the whole position at market.
        ts = T0
        _, o, h, _low, c, v = candle(SYMBOL, "1m", ts)
        live.session.on_bar(ts, {SYMBOL: ClosedCandle(o, max(h, o), avg * 0.97, c, v)})
        intents, _ = live.session.take_outbox()
        exits = [i for i in intents if i.intent == "stop_loss"]
        assert len(exits) == 1 and exits[0].side == "sell"
        assert exits[0].amount == pytest.approx(live.session.position(SYMBOL))


async def test_a_bar_decided_again_after_a_restart_follows_the_order_it_sent_and_sends_nothing_twice(
    venue: TradingVenue, target: DatabaseTarget
) -> None:
    from cracktrader.runs.live import load_stored

    async with live_path(venue, target) as live:
        decided = OrderIntent(SYMBOL, "buy", "limit", 0.001, 10_000.0, order_id=1, bar_ms=T0)
        sent = await live.orders.place(decided)
        # A restart from the bar before: the rows come back, and the strategy decides the bar at T0 again.
        stored = await load_stored(live.store, RUN)
        fresh = LiveOrders(run_id=RUN, token=lambda: 1, exchange="binance", tag=session_tag(RUN), calls=live.calls,
                           store=live.store, clock=live.clock, portfolio=live.session)  # fmt: skip
        fresh.restore(stored.orders, stored.fills)

        again = await fresh.place(dataclasses.replace(decided, order_id=7))
        assert again.client_order_id == sent.client_order_id and len(live.venue_orders()) == 1
        assert fresh.intents[sent.client_order_id].order_id == 7  # the number the strategy holds this time
        # The next bar's order of the same kind is a new decision: sent.
        later = await fresh.place(dataclasses.replace(decided, order_id=8, bar_ms=T0 + 60_000))
        assert later.client_order_id != sent.client_order_id and len(live.venue_orders()) == 2
        await live.assert_equals_venue()
