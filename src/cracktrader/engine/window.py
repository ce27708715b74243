"""The window rule: how many bars a live strategy sees, and what it decides on them.

Paper and live runtimes keep `window_length(strategy)` closed candles per symbol and act on the newest bar;
`cracktrader check` compares those decisions with the full-history backtest. Both call this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cracktrader.engine.broker import BarContext, OrderDecision, OrderView, missing_value
from cracktrader.engine.context import Context
from cracktrader.engine.fills import BUY, SELL
from cracktrader.engine.market import Bars
from cracktrader.engine.strategy import Signals, Strategy
from cracktrader.errors import UserInputError


def window_length(strategy: Strategy) -> int:
    """Bars per symbol a live runtime keeps: the strategy's `warmup()`, at least the current bar."""
    return max(1, int(strategy.warmup()))


def window_of(bars: Bars, t: int, length: int) -> Bars:
    """The live window ending at bar t: bars [t - length + 1, t] (fewer at the start of the history)."""
    return bars.slice(max(0, t + 1 - length), t + 1)


@dataclass(frozen=True, slots=True)
class SignalDecision:
    """What a vectorized strategy decides at one bar; sizing and brackets count only with an entry."""

    entry: bool
    exit: bool
    short_entry: bool
    short_exit: bool
    size: float | None = None
    stop_loss: float | None = None
    take_profit: float | None = None

    @property
    def acts(self) -> bool:
        """Whether any signal is on."""
        return self.entry or self.exit or self.short_entry or self.short_exit


def _flag(values: np.ndarray | None, k: int) -> bool:
    return bool(values[k]) if values is not None else False


def _level(values: float | np.ndarray | None, k: int) -> float | None:
    if values is None:
        return None
    v = float(values[k]) if isinstance(values, np.ndarray) and values.ndim else float(values)
    return None if v != v else v


def decision_at(signals: Signals, k: int) -> SignalDecision:
    """The decision `signals` holds for bar k (negative k counts from the end)."""
    entry, short_entry = _flag(signals.entries, k), _flag(signals.short_entries, k)
    opens = entry or short_entry
    return SignalDecision(
        entry,
        _flag(signals.exits, k),
        short_entry,
        _flag(signals.short_exits, k),
        _level(signals.size, k) if opens else None,
        _level(signals.stop_loss, k) if opens else None,
        _level(signals.take_profit, k) if opens else None,
    )


def live_decision(strategy: Strategy, window: Bars) -> SignalDecision:
    """What a vectorized strategy decides on the newest bar of a live window."""
    return decision_at(strategy.signals(window), -1)


def compute_indicators(strategy: Strategy, bars: Bars) -> dict[str, np.ndarray]:
    """An event strategy's `indicators(bars)`, checked: one array per name, as long as the bars."""
    raw: Mapping[str, np.ndarray] = strategy.indicators(bars)
    if not isinstance(raw, Mapping):
        raise UserInputError(f"{strategy.name}.indicators() must return a mapping of name to array")
    out: dict[str, np.ndarray] = {}
    n = len(bars)
    for name, values in raw.items():
        arr = np.asarray(values)
        if arr.ndim != 1 or arr.shape[0] != n:
            raise UserInputError(
                f"{strategy.name}.indicators()[{name!r}] has shape {arr.shape}; expected one value per bar ({n},)"
            )
        out[str(name)] = arr
    return out


def act_on_signals(ctx: Context, symbol: str, decision: SignalDecision, *, allow_short: bool) -> None:
    """Turn a vectorized strategy's decision at the current bar into orders, as the compiled kernel does.

    One pending decision per symbol; an exit closes the whole position, an entry buys (or, shorting, sells) the
    signal's `size` share of cash with its brackets. The property test in tests/test_engine_accounting.py holds
    the two to bit-identical fills.
    """
    if any(o.reason == "signal" for o in ctx.open_orders(symbol)):
        return
    pos = ctx.position(symbol)
    if pos > 0:
        if decision.exit and not decision.entry:
            ctx.sell(symbol)
    elif pos < 0:
        if decision.short_exit and not decision.short_entry:
            ctx.close_position(symbol)
    elif decision.entry and not decision.exit:
        ctx.buy(symbol, fraction=_fraction(decision), stop_loss=decision.stop_loss, take_profit=decision.take_profit)
    elif allow_short and decision.short_entry and not decision.short_exit:
        ctx.sell(symbol, fraction=_fraction(decision), stop_loss=decision.stop_loss, take_profit=decision.take_profit)


def _fraction(decision: SignalDecision) -> float:
    return 1.0 if decision.size is None else decision.size


class WindowContext:
    """The `Context` of a live runtime: the strategy sees the last `length` bars; the portfolio is the simulator's.

    Indicators are computed on the window, as a live runtime must. With `record=True` (how `check` probes a
    fresh strategy beside a backtest) orders are only recorded in `decisions`; otherwise they go to the simulator.
    """

    def __init__(self, ctx: BarContext, strategy: Strategy, length: int, *, record: bool = False) -> None:
        self._ctx = ctx
        self._strategy = strategy
        self._length = length
        self._record_only = record
        self._ind: dict[str, dict[str, np.ndarray]] = {}
        self.symbols = ctx.symbols
        self.decisions: list[OrderDecision] = []

    @property
    def timestamp(self) -> int:
        return self._ctx.timestamp

    @property
    def cash(self) -> float:
        return self._ctx.cash

    @property
    def value(self) -> float:
        return self._ctx.value

    def _name(self, symbol: str | None) -> str:
        return self.symbols[self._ctx._j(symbol)]

    def bars(self, symbol: str | None = None) -> Bars:
        return window_of(self._ctx.bars(symbol), self._ctx.i, self._length)

    def indicator(self, name: str, symbol: str | None = None, ago: int = 0) -> float:
        key = self._name(symbol)
        if key not in self._ind:
            self._ind[key] = compute_indicators(self._strategy, self.bars(key))
        series = self._ind[key][name]
        if ago < 0 or ago >= len(series):
            return missing_value(series)
        return series[len(series) - 1 - ago]

    def price(self, symbol: str | None = None) -> float:
        return self._ctx.price(symbol)

    def position(self, symbol: str | None = None) -> float:
        return self._ctx.position(symbol)

    def open_orders(self, symbol: str | None = None) -> list[OrderView]:
        return self._ctx.open_orders(symbol)

    def _record(self, side: int, symbol: str | None, size: float | None, **kw: float | None) -> int:
        if not self._record_only:
            place = self._ctx.buy if side == BUY else self._ctx.sell
            return place(symbol, size, **kw)  # type: ignore[arg-type]
        self.decisions.append(OrderDecision(self._ctx.i, self._ctx._j(symbol), side, size, **kw))  # type: ignore[arg-type]
        return -len(self.decisions)

    def buy(
        self,
        symbol: str | None = None,
        size: float | None = None,
        *,
        limit: float | None = None,
        stop: float | None = None,
        stop_loss: float | None = None,
        take_profit: float | None = None,
        fraction: float = 1.0,
    ) -> int:
        return self._record(
            BUY, symbol, size, limit=limit, stop=stop, stop_loss=stop_loss, take_profit=take_profit, fraction=fraction
        )

    def sell(
        self,
        symbol: str | None = None,
        size: float | None = None,
        *,
        limit: float | None = None,
        stop: float | None = None,
        stop_loss: float | None = None,
        take_profit: float | None = None,
        fraction: float = 1.0,
    ) -> int:
        return self._record(
            SELL, symbol, size, limit=limit, stop=stop, stop_loss=stop_loss, take_profit=take_profit, fraction=fraction
        )

    def close_position(self, symbol: str | None = None) -> int | None:
        if not self._record_only:
            return self._ctx.close_position(symbol)
        p = self._ctx.position(symbol)
        if p == 0.0:
            return None
        return self._record(SELL if p > 0 else BUY, symbol, abs(p))

    def cancel(self, order_id: int) -> bool:
        if not self._record_only:
            return self._ctx.cancel(order_id)
        self.decisions.append(OrderDecision(self._ctx.i, -1, 0, float(order_id)))
        return True
