"""Parameter sweeps: a grid of combinations, each with exactly its single backtest's metrics."""

from __future__ import annotations

from cracktrader.sweeps.grid import Combination, InvalidGridError, Skipped, parse_grid_option, parse_range
from cracktrader.sweeps.plans import SweepInputs, SweepRow
from cracktrader.sweeps.sweep import DEFAULT_METRICS, SweepResult, sweep

__all__ = [
    "DEFAULT_METRICS",
    "Combination",
    "InvalidGridError",
    "Skipped",
    "SweepInputs",
    "SweepResult",
    "SweepRow",
    "parse_grid_option",
    "parse_range",
    "sweep",
]
