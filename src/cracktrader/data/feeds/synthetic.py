"""The offline `synthetic` exchange in real time: each candle handed over at its close, by the backtest's generator."""

from __future__ import annotations

from collections.abc import AsyncIterator

from cracktrader.clock import Clock
from cracktrader.data.feeds.base import BarBatch, batches
from cracktrader.data.sources.synthetic import generate
from cracktrader.data.timeframes import Timeframe

# Bars generated per call: a minute of them (one bar for timeframes of a minute and longer).
BLOCK_MS = 60_000


class SyntheticFeed:
    """Closed candles of `symbols` from the bar after `clock`'s now on, each delivered at its close."""

    def __init__(
        self, symbols: tuple[str, ...], timeframe: Timeframe, clock: Clock, *, start_ms: int | None = None
    ) -> None:
        self._symbols = symbols
        self._tf = timeframe
        self._clock = clock
        # The bar forming when the feed was made is its first: bars that close before the consumer starts are
        # delivered at once, in order, instead of being skipped. A restart passes the first bar it has not seen:
        # the generator makes past bars exactly as it made them then, so the missed ones are replayed at once.
        self._first_open = timeframe.floor(clock.now_ms() if start_ms is None else int(start_ms))

    def history(self, bars: int) -> list[BarBatch]:
        """The `bars` closed bars before the feed's first one: the window a session warms up on."""
        end = self._first_open
        start = end - bars * self._tf.ms
        return batches({s: generate(s, self._tf, start, end, end) for s in self._symbols})

    async def __aiter__(self) -> AsyncIterator[BarBatch]:
        opened = self._first_open
        block = max(1, BLOCK_MS // self._tf.ms)
        while True:
            # A block of bars at once: a call costs ~8.5 ms whatever its length, which 50 sessions of 1s candles
            # paid every second (/status p99 33 ms beside them). Each bar is still handed over only at its close,
            # and it is the same candle a backtest of that bar gets (generation depends on the bar alone).
            end = opened + block * self._tf.ms
            ahead = batches({s: generate(s, self._tf, opened, end, end) for s in self._symbols})
            for batch in ahead:
                await self._clock.sleep_until(batch.timestamp + self._tf.ms)
                yield batch
            opened = end
