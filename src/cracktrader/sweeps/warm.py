"""Imported by the sweeps' fork server: loads the engine and its compiled kernels once, before any worker forks.

A fresh interpreter spends 2-3 s importing cracktrader and about 1 s more (4 s on a busy machine) loading the
engine's kernels from numba's cache on its first backtest; the server pays that once and every worker it forks
starts warm.
"""

from __future__ import annotations

import logging

import numpy as np

from cracktrader.engine.backtest import run_backtest
from cracktrader.engine.broker import SimSettings
from cracktrader.engine.market import MarketData
from cracktrader.strategies.builtin import SmaCrossEvents


def warm_engine(n: int = 300) -> None:
    """One short event-driven backtest with trades: every kernel it calls is compiled (or loaded) here."""
    timestamp = np.arange(n, dtype=np.int64) * 60_000 + 1_672_531_200_000
    close = (100.0 + np.cumsum(np.sin(np.arange(n) / 7.0))).reshape(n, 1)
    data = MarketData(
        ("WARM/USDT",),
        timestamp,
        close,
        close * 1.01,
        close * 0.99,
        close,
        np.ones((n, 1)),
        np.ones((n, 1), bool),
        525_600.0,
    )
    run_backtest(SmaCrossEvents({"fast": 3, "slow": 9}), data, SimSettings())


try:
    warm_engine()
except Exception:  # the server must start regardless: its workers then load the kernels on their first backtest
    logging.getLogger(__name__).exception("Could not warm the engine in the sweeps' fork server")
