"""The offline `synthetic` exchange in real time: each candle is generated when it closes, by the same generator."""

from __future__ import annotations

from collections.abc import AsyncIterator

from cracktrader.clock import Clock
from cracktrader.data.feeds.base import BarBatch, batches
from cracktrader.data.sources.synthetic import generate
from cracktrader.data.timeframes import Timeframe


class SyntheticFeed:
    """Closed candles of `symbols` from the bar after `clock`'s now on, each delivered at its close."""

    def __init__(self, symbols: tuple[str, ...], timeframe: Timeframe, clock: Clock) -> None:
        self._symbols = symbols
        self._tf = timeframe
        self._clock = clock
        # The bar forming when the feed was made is its first: bars that close before the consumer starts are
        # delivered at once, in order, instead of being skipped.
        self._first_open = timeframe.floor(clock.now_ms())

    def history(self, bars: int) -> list[BarBatch]:
        """The `bars` closed bars before the feed's first one: the window a session warms up on."""
        end = self._first_open
        start = end - bars * self._tf.ms
        return batches({s: generate(s, self._tf, start, end, end) for s in self._symbols})

    async def __aiter__(self) -> AsyncIterator[BarBatch]:
        opened = self._first_open
        while True:
            closes = opened + self._tf.ms
            await self._clock.sleep_until(closes)
            # The same candle a backtest of this bar gets: generation depends on the bar, not on when it runs.
            candles = {s: generate(s, self._tf, opened, closes, closes) for s in self._symbols}
            for batch in batches(candles):
                yield batch
            opened = closes
