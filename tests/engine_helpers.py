"""Builders for small hand-made markets and signal strategies used by the engine tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cracktrader.engine.broker import BarContext
from cracktrader.engine.market import Bars, MarketData, align
from cracktrader.engine.strategy import Signals, Strategy

HOUR_MS = 3_600_000


@dataclass
class Ohlcv:
    """Plain candle columns (the engine's OHLCV protocol)."""

    timestamp: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


def candles(rows: Sequence[tuple[float, float, float, float]], start_ms: int = 0, step: int = HOUR_MS) -> Ohlcv:
    """Candles from (open, high, low, close) rows, one hour apart."""
    arr = np.asarray(rows, dtype=np.float64)
    n = arr.shape[0]
    return Ohlcv(
        start_ms + np.arange(n, dtype=np.int64) * step,
        arr[:, 0].copy(),
        arr[:, 1].copy(),
        arr[:, 2].copy(),
        arr[:, 3].copy(),
        np.ones(n),
    )


def market(*symbol_rows: tuple[str, Sequence[tuple[float, float, float, float]]]) -> MarketData:
    """Aligned market data of hourly candles."""
    return align({s: candles(rows) for s, rows in symbol_rows}, 8760.0)


def random_walk(n: int, seed: int = 1, vol: float = 0.01) -> Ohlcv:
    """A reproducible random-walk market with gaps between close and open."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, vol, n)))
    open_ = np.r_[100.0, close[:-1]] * np.exp(rng.normal(0, vol / 4, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, vol / 2, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, vol / 2, n)))
    return Ohlcv(np.arange(n, dtype=np.int64) * HOUR_MS, open_, high, low, close, np.ones(n))


class FixedSignals(Strategy):
    """Vectorized strategy replaying given per-symbol signals."""

    plan: dict[str, Signals] = {}  # noqa: RUF012 - set per test through `with_signals`

    def signals(self, bars: Bars) -> Signals:
        return self.plan[bars.symbol]


def with_signals(**plan: Signals) -> FixedSignals:
    """An instance of a one-off FixedSignals subclass carrying `plan`."""
    cls = type("Planned", (FixedSignals,), {"plan": plan})
    return cls()


def flags(n: int, *true_at: int) -> np.ndarray:
    """Boolean array of length n, True at the given bars."""
    out = np.zeros(n, dtype=np.bool_)
    out[list(true_at)] = True
    return out


class Scripted(Strategy):
    """Event-driven strategy that runs `script[i](ctx)` at bar i."""

    script: dict[int, Callable[[BarContext], None]] = {}  # noqa: RUF012 - set per test through `scripted`

    def on_bar(self, ctx: BarContext) -> None:
        action = self.script.get(ctx.i)
        if action is not None:
            action(ctx)


def scripted(**script: Callable[[BarContext], None]) -> Scripted:
    """An instance of a one-off Scripted subclass; keys are `b<index>`."""
    cls = type("ScriptedRun", (Scripted,), {"script": {int(k[1:]): v for k, v in script.items()}})
    return cls()
