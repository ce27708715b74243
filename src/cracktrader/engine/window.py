"""The window rule: how many bars a live strategy sees, and what it decides on them.

Paper and live runtimes keep `window_length(strategy)` closed candles per symbol and act on the newest bar;
`cracktrader check` compares those decisions with the full-history backtest. Both call this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

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
