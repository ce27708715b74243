"""The longest drawdown says its unit: `max_drawdown_duration_bars` next to the days, and the CLI prints both."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cracktrader.cli import app
from cracktrader.engine.metrics import METRIC_KEYS, compute_metrics

runner = CliRunner()
HOUR_MS = 3_600_000
YEAR_1H = ["--exchange", "synthetic", "--symbol", "BTC/USDT", "--start", "2024-01-01", "--end", "2025-01-01"]


def test_max_drawdown_duration_bars_is_the_bar_count_beside_the_days() -> None:
    # Curve [100, 100, 110, 99, 121] of hourly bars: the peak 110 falls and is regained 2 bars (2 h) later.
    equity = np.array([100.0, 110.0, 99.0, 121.0])
    m = compute_metrics(
        equity=equity,
        initial_cash=100.0,
        timestamps_ms=np.arange(4, dtype=np.int64) * HOUR_MS,
        periods_per_year=8760.0,
        trade_pnls=np.array([]),
        trade_returns=np.array([]),
        fees_paid=0.0,
        in_market=np.zeros(4, dtype=bool),
        buy_and_hold_return=0.0,
    )
    assert (m["max_drawdown_duration"], m["max_drawdown_duration_bars"]) == (2, 2)
    assert m["max_drawdown_duration_days"] == 2 / 24
    keys = list(METRIC_KEYS)
    assert keys.index("max_drawdown_duration_bars") == keys.index("max_drawdown_duration") + 1
    assert keys.index("max_drawdown_duration_days") == keys.index("max_drawdown_duration") + 2


def test_cli_summary_prints_max_drawdown_duration_in_bars_and_days() -> None:
    args = ["backtest", "--strategy", "SmaCross", *YEAR_1H]
    doc = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    m = doc["performance_metrics"]
    bars, days = m["max_drawdown_duration_bars"], m["max_drawdown_duration_days"]
    assert bars == m["max_drawdown_duration"] > 0 and days > 0
    summary = runner.invoke(app, args)
    assert summary.exit_code == 0, summary.output
    (row,) = [line for line in summary.stdout.splitlines() if "max drawdown duration" in line]
    assert f"{bars:,} bars ({days:,.1f} days)" in row
    # Hourly bars without gaps: the days are the bars / 24.
    assert days == pytest.approx(bars / 24)
