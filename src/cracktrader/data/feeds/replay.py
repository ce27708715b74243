"""Stored candles played through the live runtime at a chosen speed (demos, tests, paper over history)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from cracktrader.clock import Clock
from cracktrader.data.candles import Candles
from cracktrader.data.feeds.base import BarBatch, batches
from cracktrader.data.timeframes import Timeframe
from cracktrader.errors import UserInputError


class ReplayFeed:
    """Delivers each bar `timeframe / speed` after the previous one, as if it had just closed."""

    def __init__(
        self,
        candles: Mapping[str, Candles] | list[BarBatch],
        timeframe: Timeframe,
        clock: Clock,
        *,
        speed: float,
    ) -> None:
        if not (isinstance(speed, int | float) and speed > 0 and speed != float("inf")):
            raise UserInputError(f"replay speed must be a positive number, got {speed!r}")
        self._batches = candles if isinstance(candles, list) else batches(candles)
        self._tf = timeframe
        self._clock = clock
        self._speed = speed

    def after(self, timestamp: int) -> ReplayFeed:
        """The same replay from the first bar after `timestamp` on (a session resumed after a restart)."""
        rest = [b for b in self._batches if b.timestamp > timestamp]
        return ReplayFeed(rest, self._tf, self._clock, speed=self._speed)

    def __len__(self) -> int:
        return len(self._batches)

    async def __aiter__(self) -> AsyncIterator[BarBatch]:
        if not self._batches:
            return
        began = self._clock.now_ms()
        first_close = self._batches[0].timestamp + self._tf.ms
        for batch in self._batches:
            due = began + int((batch.timestamp + self._tf.ms - first_close) / self._speed)
            await self._clock.sleep_until(due)
            yield batch
