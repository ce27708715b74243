"""The quote fill model on a manual clock: latency picks the quote, limits rest until the market trades through."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from cracktrader.brokers.paper import PaperSession
from cracktrader.clock import ManualClock
from cracktrader.data.feeds.base import ClosedCandle
from cracktrader.data.feeds.quotes import Quote, SyntheticQuoteFeed, synthetic_quote
from cracktrader.data.sources.synthetic import generate
from cracktrader.data.timeframes import parse_timeframe
from cracktrader.engine.broker import SimSettings
from cracktrader.engine.context import Context
from cracktrader.engine.records import (
    O_FEE,
    O_PRICE,
    O_QTY,
    O_REASON,
    O_STATUS,
    REASON_STOP_LOSS,
    STATUS_FILLED,
    STATUS_OPEN,
)
from cracktrader.engine.rules import MarketRules
from cracktrader.engine.strategy import Strategy
from cracktrader.runs.config import LiveConfig
from cracktrader.runs.session import run_session
from cracktrader.runs.trade import prepare_paper

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
M1 = parse_timeframe("1m")
SYMBOL = "BTC/USDT"
SETTINGS = SimSettings(maker_fee=0.0002, taker_fee=0.001, slippage=0.0005)
CANDLE = ClosedCandle(100.0, 100.5, 99.5, 100.0, 1.0)


class Script(Strategy):
    """Runs the next action of `steps` on each bar."""

    name = "Script"
    steps: ClassVar[list[Callable[[Context], Any]]] = []

    def on_bar(self, ctx: Context) -> None:
        if self.steps:
            self.steps.pop(0)(ctx)


class Clock:
    """A settable now for the session's decision times."""

    def __init__(self, now: int) -> None:
        self.now = now

    def now_ms(self) -> int:
        return self.now


def session_with(
    *steps: Callable[[Context], Any], latency_ms: int = 200, rules: bool = False
) -> tuple[PaperSession, Clock]:
    cls = type("Scripted", (Script,), {"steps": list(steps)})
    settings = SETTINGS
    if rules:
        settings = SimSettings(slippage=0.0005, rules=(MarketRules(0.0002, 0.001, 0.001, 0.01, min_notional=5.0),))
    session = PaperSession(cls(), (SYMBOL,), settings, M1.periods_per_year)
    clock = Clock(NOW + M1.ms)  # bar 0 closes: the strategy decides now
    session.use_quotes(latency_ms, clock.now_ms)
    return session, clock


def q(at: int, bid: float, ask: float) -> Quote:
    return Quote(SYMBOL, bid, ask, at)


def next_bar(session: PaperSession, clock: Clock) -> None:
    clock.now = NOW + (session.bars + 1) * M1.ms
    session.on_bar(NOW + session.bars * M1.ms, {SYMBOL: CANDLE})


def test_a_market_order_fills_at_the_first_ask_at_or_after_its_decision_plus_latency() -> None:
    session, clock = session_with(lambda ctx: ctx.buy(SYMBOL, 0.5))
    next_bar(session, clock)  # decides at NOW + 1 min: the order reaches the exchange 200 ms later
    decided = clock.now
    session.on_quote(q(decided + 199, 90.0, 90.1))  # too early: the order is not there yet
    session.on_quote(q(decided + 200, 100.9, 101.0))  # the quote it sees
    session.on_quote(q(decided + 300, 110.0, 110.1))
    assert session.sim.open_orders  # booked when the bar it filled in closes
    next_bar(session, clock)
    (row,) = session.result().orders
    assert (row[O_STATUS], row[O_QTY]) == (STATUS_FILLED, 0.5)
    assert row[O_PRICE] == 101.0 * (1 + 0.0005)  # the ask plus slippage
    assert row[O_FEE] == pytest.approx(0.5 * row[O_PRICE] * 0.001)  # taker


@pytest.mark.parametrize(("latency", "price"), [(0, 101.0), (250, 102.0), (1_000, 103.0)])
def test_latency_decides_which_quote_an_order_sees(latency: int, price: float) -> None:
    session, clock = session_with(lambda ctx: ctx.buy(SYMBOL, 0.5), latency_ms=latency)
    next_bar(session, clock)
    for offset, ask in ((0, 101.0), (250, 102.0), (1_000, 103.0), (5_000, 104.0)):
        session.on_quote(q(clock.now + offset, ask - 0.1, ask))
    next_bar(session, clock)
    assert session.result().orders[0][O_PRICE] == pytest.approx(price * 1.0005)


def test_a_sell_fills_at_the_bid_minus_slippage() -> None:
    session, clock = session_with(lambda ctx: ctx.buy(SYMBOL, 0.5), lambda ctx: ctx.sell(SYMBOL))
    next_bar(session, clock)
    session.on_quote(q(clock.now + 200, 99.9, 100.0))
    next_bar(session, clock)  # the buy is booked; the strategy sells the position
    session.on_quote(q(clock.now + 200, 104.0, 104.2))
    next_bar(session, clock)
    sell = session.result().orders[1]
    assert (sell[O_STATUS], sell[O_QTY], sell[O_PRICE]) == (STATUS_FILLED, 0.5, 104.0 * (1 - 0.0005))


def test_a_limit_order_rests_until_the_ask_trades_through_its_price_then_fills_there_as_maker() -> None:
    session, clock = session_with(lambda ctx: ctx.buy(SYMBOL, 0.5, limit=100.0))
    next_bar(session, clock)
    t = clock.now + 200
    session.on_quote(q(t, 100.4, 100.5))  # not marketable: it rests in the book
    session.on_quote(q(t + 100, 99.9, 100.0))  # the ask touches the limit: not through it
    next_bar(session, clock)
    assert session.result().orders[0][O_STATUS] == STATUS_OPEN
    session.on_quote(q(clock.now + 10, 99.8, 99.9))  # through: filled at the limit
    next_bar(session, clock)
    row = session.result().orders[0]
    assert (row[O_STATUS], row[O_PRICE]) == (STATUS_FILLED, 100.0)
    assert row[O_FEE] == pytest.approx(0.5 * 100.0 * 0.0002)  # maker


def test_a_marketable_limit_order_takes_the_ask_at_once() -> None:
    session, clock = session_with(lambda ctx: ctx.buy(SYMBOL, 0.5, limit=101.0))
    next_bar(session, clock)
    session.on_quote(q(clock.now + 200, 100.4, 100.5))
    next_bar(session, clock)
    row = session.result().orders[0]
    assert (row[O_STATUS], row[O_PRICE]) == (STATUS_FILLED, 100.5)
    assert row[O_FEE] == pytest.approx(0.5 * 100.5 * 0.001)  # taker


def test_a_protective_stop_triggers_on_the_bid() -> None:
    session, clock = session_with(lambda ctx: ctx.buy(SYMBOL, 0.5, stop_loss=0.05))
    next_bar(session, clock)
    session.on_quote(q(clock.now + 200, 99.9, 100.0))
    next_bar(session, clock)  # entry booked at 100.05; its stop at 95.0475 goes out now
    entry = session.result().orders[0][O_PRICE]
    session.on_quote(q(clock.now + 200, 96.0, 96.1))
    session.on_quote(q(clock.now + 300, 94.0, 94.1))
    next_bar(session, clock)
    stop = session.result().orders[1]
    assert (stop[O_STATUS], stop[O_REASON], stop[O_PRICE]) == (STATUS_FILLED, REASON_STOP_LOSS, 94.0 * (1 - 0.0005))
    assert entry == 100.0 * 1.0005 and session.sim.pos[0] == 0.0


def test_with_exchange_rules_quote_fills_land_on_the_price_grid() -> None:
    session, clock = session_with(lambda ctx: ctx.buy(SYMBOL, 0.12345), rules=True)
    next_bar(session, clock)
    session.on_quote(q(clock.now + 200, 100.0, 100.01))
    next_bar(session, clock)
    row = session.result().orders[0]
    assert (row[O_QTY], row[O_PRICE]) == (0.123, 100.06)  # 100.01 x 1.0005 = 100.060005, on the 0.01 grid


def test_synthetic_quotes_are_deterministic_and_follow_the_forming_candle() -> None:
    at = NOW + 30_000
    a, b = synthetic_quote(SYMBOL, M1, at), synthetic_quote(SYMBOL, M1, at)
    assert a == b and a.bid < a.ask
    bar = generate(SYMBOL, M1, NOW, NOW + M1.ms, NOW + M1.ms)
    mid = (a.bid + a.ask) / 2
    assert float(bar.low[0]) - 0.01 <= mid <= float(bar.high[0]) + 0.01
    assert synthetic_quote(SYMBOL, M1, NOW).bid == pytest.approx(float(bar.open[0]) - 0.01)


@pytest.mark.anyio
async def test_a_synthetic_session_with_the_quote_model_fills_from_its_quote_stream() -> None:
    clock = ManualClock(NOW + 10)
    config = LiveConfig(
        strategy_name="BuyAndHold",
        symbols=[SYMBOL],
        timeframe="1s",
        exchange="synthetic",
        exchange_config={"paper": {"fill_model": "quote", "latency_ms": 400}},
    )
    plan = prepare_paper(config, clock=clock)
    assert plan.session.quotes is not None and isinstance(plan.feed.quotes, SyntheticQuoteFeed)  # type: ignore[attr-defined]
    task = asyncio.create_task(run_session(plan.session, plan.feed, history=plan.history, max_bars=3))
    for _ in range(40):  # 4 s of clock in quote steps (250 ms on 1s candles)
        await clock.advance(100)
    assert await asyncio.wait_for(task, 10) == 3
    orders = plan.session.result().orders
    filled = orders[orders[:, O_STATUS] == STATUS_FILLED]
    assert len(filled) == 1
    # BuyAndHold buys on the first live bar (closing at NOW + 1 s): the first quote at or after 1.4 s is at 1.5 s.
    ask = synthetic_quote(SYMBOL, parse_timeframe("1s"), NOW + 1_500).ask
    rules = plan.session.sim.s.rules
    assert rules is not None and filled[0][O_PRICE] == ask
