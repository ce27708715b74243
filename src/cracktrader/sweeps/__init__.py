"""Parameter sweeps (each row exactly its single backtest's metrics), walk-forward and purged cross-validation."""

from __future__ import annotations

from cracktrader.sweeps.cpcv import CpcvReport, cpcv
from cracktrader.sweeps.grid import Combination, InvalidGridError, Skipped, parse_grid_option, parse_range
from cracktrader.sweeps.plans import SweepInputs, SweepRow
from cracktrader.sweeps.sweep import DEFAULT_METRICS, SweepResult, sweep
from cracktrader.sweeps.walkforward import WalkForwardReport, WindowReport, walk_forward
from cracktrader.sweeps.windows import InvalidWindowsError

__all__ = [
    "DEFAULT_METRICS",
    "Combination",
    "CpcvReport",
    "InvalidGridError",
    "InvalidWindowsError",
    "Skipped",
    "SweepInputs",
    "SweepResult",
    "SweepRow",
    "WalkForwardReport",
    "WindowReport",
    "cpcv",
    "parse_grid_option",
    "parse_range",
    "sweep",
    "walk_forward",
]
