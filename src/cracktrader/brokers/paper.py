"""Paper trading: the backtest's matching engine (`EventSimulator`) fed closed candles as they arrive.

A session sees the live window (`engine.window`), places orders through the same `Context`, and is filled by the
same rules and the same accounting as a backtest; over replayed candles it reproduces the backtest exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from cracktrader.data.feeds.base import ClosedCandle
from cracktrader.engine.backtest import BacktestResult, deliverer, simulator_result
from cracktrader.engine.broker import BarContext, EventSimulator, SimSettings
from cracktrader.engine.strategy import Strategy
from cracktrader.engine.window import WindowContext, act_on_signals, live_decision, window_length
from cracktrader.errors import UserInputError


class PaperSession:
    """A strategy trading on closed candles delivered one bar time at a time (`on_bar`), filled by the simulator."""

    def __init__(
        self, strategy: Strategy, symbols: tuple[str, ...], settings: SimSettings, periods_per_year: float
    ) -> None:
        if not symbols:
            raise UserInputError("A paper session needs at least one symbol")
        self.strategy = strategy
        self.symbols = symbols
        self.sim = EventSimulator.live(symbols, settings, periods_per_year, events=strategy.wants_events())
        self.ctx = BarContext(self.sim)
        self.window = window_length(strategy)
        self._deliver = deliverer(strategy, self.sim, self.ctx) if strategy.wants_events() else None
        self._vectorized = strategy.style() == "vectorized"
        self._last_close = np.full(len(symbols), math.nan)
        self.last_timestamp: int | None = None
        self.warmup_bars = 0  # history bars added by `warm` before the first live one

    @property
    def bars(self) -> int:
        """Closed bars seen so far."""
        return self.sim.data.n_bars

    def warm(self, timestamp: int, candles: Mapping[str, ClosedCandle]) -> None:
        """Add a bar of history from before the session started: in the window, but never decided on."""
        t, _ = self._append(timestamp, candles)
        self.warmup_bars += 1
        self.sim.mark(t)
        self.sim.flush_marks(t)

    def on_bar(self, timestamp: int, candles: Mapping[str, ClosedCandle]) -> None:
        """Process the bar that opened at `timestamp`: fill due orders in it, then let the strategy decide.

        A symbol without a candle at this time keeps its last close and cannot trade in this bar (as the backtest's
        alignment does); candles of unknown symbols are refused.
        """
        t, tradable = self._append(timestamp, candles)
        if self.sim.open_orders:
            self.sim.process_bar(t)
        self.ctx.i = t
        if self._deliver is not None:
            self._deliver()
        self._decide(tradable)
        self.sim.mark(t)
        self.sim.flush_marks(t)

    def _append(self, timestamp: int, candles: Mapping[str, ClosedCandle]) -> tuple[int, np.ndarray]:
        if self.last_timestamp is not None and timestamp <= self.last_timestamp:
            raise UserInputError(f"Bar {timestamp} is not after the last bar {self.last_timestamp}")
        unknown = set(candles) - set(self.symbols)
        if unknown:
            raise UserInputError(f"Candles for symbols this session does not trade: {sorted(unknown)}")
        m = len(self.symbols)
        cols = np.empty((5, m))
        tradable = np.zeros(m, dtype=np.bool_)
        for j, symbol in enumerate(self.symbols):
            c = candles.get(symbol)
            if c is None:
                last = self._last_close[j]
                cols[:, j] = (last, last, last, last, 0.0)
            else:
                cols[:, j] = (c.open, c.high, c.low, c.close, c.volume)
                tradable[j] = True
                self._last_close[j] = c.close
        t = self.sim.append_bar(timestamp, cols[0], cols[1], cols[2], cols[3], cols[4], tradable)
        self.last_timestamp = timestamp
        return t, tradable

    def _decide(self, tradable: np.ndarray) -> None:
        wctx = WindowContext(self.ctx, self.strategy, self.window)
        if not self._vectorized:
            self.strategy.on_bar(wctx)
            return
        allow_short = self.sim.s.allow_short
        for j, symbol in enumerate(self.symbols):
            if tradable[j]:  # no decision on a bar without the symbol's candle, as in the kernel
                act_on_signals(wctx, symbol, live_decision(self.strategy, wctx.bars(symbol)), allow_short=allow_short)

    def result(self) -> BacktestResult:
        """Everything so far in a backtest's shape: orders, equity, positions, metrics."""
        if self.bars == 0:
            raise UserInputError("The session has not seen a closed bar yet")
        return simulator_result(self.sim, self.bars)
