"""Paper sessions driven by live feeds on an injected clock: replay, the synthetic exchange in real time, stop."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from cracktrader.brokers.paper import PaperSession
from cracktrader.clock import ManualClock
from cracktrader.data.feeds.base import BarBatch
from cracktrader.data.feeds.replay import ReplayFeed
from cracktrader.data.feeds.synthetic import SyntheticFeed
from cracktrader.data.sources.synthetic import generate
from cracktrader.data.timeframes import parse_timeframe
from cracktrader.engine.backtest import run_backtest
from cracktrader.engine.broker import SimSettings
from cracktrader.engine.market import align
from cracktrader.errors import UserInputError
from cracktrader.runs.session import run_session
from cracktrader.strategies.builtin import SmaCross, SmaCrossEvents

pytestmark = pytest.mark.anyio
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
H1 = parse_timeframe("1h")
S1 = parse_timeframe("1s")
SYMBOLS = ("BTC/USDT", "ETH/USDT")


def _history(bars: int) -> dict[str, object]:
    return {s: generate(s, H1, NOW - bars * H1.ms, NOW, NOW) for s in SYMBOLS}


async def test_a_replay_at_any_speed_trades_exactly_as_the_backtest() -> None:
    candles = _history(2000)
    settings = SimSettings(taker_fee=0.001, maker_fee=0.0005)
    session = PaperSession(SmaCrossEvents(size=0.5), SYMBOLS, settings, H1.periods_per_year)
    clock = ManualClock(NOW, auto=True)  # sleeps end at once: 2000 hours replayed without waiting
    processed = await run_session(session, ReplayFeed(candles, H1, clock, speed=1000))  # type: ignore[arg-type]
    assert processed == 2000
    paper = session.result()
    backtest = run_backtest(SmaCrossEvents(size=0.5), align(candles, H1.periods_per_year), settings)  # type: ignore[arg-type]
    np.testing.assert_array_equal(paper.orders, backtest.orders)
    np.testing.assert_array_equal(paper.equity, backtest.equity)
    # At speed 1000 an hour lasts 3.6 s: the last bar came 1999 x 3.6 s after the first.
    assert clock.now_ms() == NOW + 1999 * 3_600


async def test_a_replay_delivers_a_bar_only_when_its_time_has_come() -> None:
    clock = ManualClock(NOW)
    feed = ReplayFeed(_history(3), H1, clock, speed=1000)  # type: ignore[arg-type]
    seen: list[BarBatch] = []

    async def consume() -> None:
        async for batch in feed:
            seen.append(batch)

    task = asyncio.create_task(consume())
    await clock.advance(0)
    assert len(seen) == 1  # the first bar at once (advance lets the woken feed run)
    await clock.advance(3_599)
    assert len(seen) == 1  # 1 ms before the next one is due
    await clock.advance(1)
    assert len(seen) == 2
    await clock.advance(3_600)
    await task
    assert [b.timestamp for b in seen] == [NOW - 3 * H1.ms, NOW - 2 * H1.ms, NOW - H1.ms]


async def test_the_synthetic_feed_delivers_each_candle_at_its_close_as_the_generator_makes_it() -> None:
    clock = ManualClock(NOW + 500)  # half a second into a 1s bar
    feed = SyntheticFeed(("BTC/USDT",), S1, clock)
    history = feed.history(31)
    assert [b.timestamp for b in history] == [NOW - (31 - k) * 1000 for k in range(31)]
    session = PaperSession(SmaCross(), ("BTC/USDT",), SimSettings(), S1.periods_per_year)
    stop = asyncio.Event()
    arrived: asyncio.Queue[int] = asyncio.Queue()
    task = asyncio.create_task(
        run_session(session, feed, history=history, stop=stop, on_bar=lambda _s, b: arrived.put_nowait(b.timestamp))
    )
    await clock.advance(499)
    assert session.bars == 31 and arrived.empty()  # warmed; the forming bar closes at NOW + 1000, not yet
    await clock.advance(1)
    assert await asyncio.wait_for(arrived.get(), timeout=5) == NOW
    await clock.advance(1000)
    assert await asyncio.wait_for(arrived.get(), timeout=5) == NOW + 1000
    assert session.bars == 33 and session.warmup_bars == 31
    expected = generate("BTC/USDT", S1, NOW, NOW + 2000, NOW + 2000)
    np.testing.assert_array_equal(session.sim.data.close[31:, 0], expected.close)
    stop.set()
    assert await asyncio.wait_for(task, timeout=5) == 2


async def test_a_stop_while_waiting_for_a_candle_ends_the_session_at_once() -> None:
    clock = ManualClock(NOW)  # never advanced: the next candle never comes
    session = PaperSession(SmaCross(), ("BTC/USDT",), SimSettings(), H1.periods_per_year)
    stop = asyncio.Event()
    task = asyncio.create_task(run_session(session, SyntheticFeed(("BTC/USDT",), H1, clock), stop=stop))
    await asyncio.sleep(0)
    stop.set()
    assert await asyncio.wait_for(task, timeout=5) == 0


def test_a_replay_speed_that_is_not_positive_is_refused() -> None:
    with pytest.raises(UserInputError, match="replay speed must be a positive number, got 0"):
        ReplayFeed(_history(3), H1, ManualClock(NOW), speed=0)  # type: ignore[arg-type]
