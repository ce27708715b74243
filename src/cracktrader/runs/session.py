"""Drive a paper session from a live feed until it is stopped (the CLI's `trade`; the server's sessions next)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from cracktrader.brokers.paper import PaperSession
from cracktrader.clock import Clock
from cracktrader.data.feeds.base import BarBatch, CandleFeed
from cracktrader.data.feeds.ccxt_feed import CcxtFeed
from cracktrader.data.feeds.replay import ReplayFeed
from cracktrader.data.feeds.synthetic import SyntheticFeed
from cracktrader.runs.config import LiveConfig
from cracktrader.runs.trade import PaperPlan
from cracktrader.settings import Settings


async def run_session(
    session: PaperSession,
    feed: CandleFeed,
    *,
    history: list[BarBatch] | None = None,
    stop: asyncio.Event | None = None,
    on_bar: Callable[[PaperSession, BarBatch], None] | None = None,
    max_bars: int | None = None,
) -> int:
    """Warm the session on `history`, then feed it each closed bar until `stop`, `max_bars` or the feed's end.

    Returns the live bars processed. A stop set while waiting for a candle ends the session at once.
    """
    for batch in history or []:
        session.warm(batch.timestamp, batch.candles)
    done = 0
    stop = stop or asyncio.Event()
    bars = aiter(feed)
    try:
        done = await _feed_bars(session, bars, stop, on_bar, max_bars)
    finally:
        close = getattr(bars, "aclose", None)
        if close is not None:  # the feed's sockets and pending writes end with the session, not at GC
            await close()
    return done


async def _feed_bars(
    session: PaperSession,
    bars: AsyncIterator[BarBatch],
    stop: asyncio.Event,
    on_bar: Callable[[PaperSession, BarBatch], None] | None,
    max_bars: int | None,
) -> int:
    done = 0
    # One stop watcher for the session, which cancels the bar being waited for; the bar itself is awaited
    # directly. A stop task and `asyncio.wait` made per bar cost each bar's delivery an extra event-loop turn.
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while (max_bars is None or done < max_bars) and not stop.is_set():
            next_bar = asyncio.ensure_future(anext(bars))

            def cancel_bar(_: object, bar: asyncio.Future[BarBatch] = next_bar) -> None:
                bar.cancel()

            stopped.add_done_callback(cancel_bar)
            try:
                batch = await next_bar
            except StopAsyncIteration:
                break
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not stop.is_set() or (current is not None and current.cancelling()):
                    raise  # cancelled from outside, not stopped
                break  # the feed saw its cancellation before it is closed (closing a running generator fails)
            finally:
                stopped.remove_done_callback(cancel_bar)
            session.on_bar(batch.timestamp, batch.candles)
            done += 1
            if on_bar is not None:
                on_bar(session, batch)
    finally:
        stopped.cancel()
    return done


def resumed_feed(plan: PaperPlan, config: LiveConfig, *, clock: Clock, settings: Settings, after: int) -> CandleFeed:
    """The plan's feed from the first bar after `after` on: the candles a restarted session missed, then live ones.

    Synthetic candles are generated again (deterministically), a replay reads on in its stored candles, and an
    exchange's are fetched over REST from that bar before the live stream takes over.
    """
    start = plan.timeframe.next(after)
    if isinstance(plan.feed, ReplayFeed):
        return plan.feed.after(after)
    if isinstance(plan.feed, SyntheticFeed):
        return SyntheticFeed(tuple(config.symbols), plan.timeframe, clock, start_ms=start)
    if isinstance(plan.feed, CcxtFeed):
        return CcxtFeed(plan.feed.exchange_id, tuple(config.symbols), plan.timeframe, clock, settings=settings,
                        start_ms=start)  # fmt: skip
    raise TypeError(f"cannot resume a session fed by {type(plan.feed).__name__}")
