"""Parameter sweeps: grids, skipped combinations, and rows equal to each combination's own backtest."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import cracktrader
from cracktrader.cli import app
from cracktrader.engine.metrics import METRIC_KEYS
from cracktrader.runs.backtest import prepare_backtest, run_prepared
from cracktrader.runs.config import BacktestConfig
from cracktrader.settings import get_settings
from cracktrader.strategies.registry import get_strategy
from cracktrader.sweeps import InvalidGridError, SweepResult, parse_grid_option, parse_range, sweep
from cracktrader.sweeps.grid import expand
from cracktrader.sweeps.job import SweepJob, run_sweep_job
from cracktrader.sweeps.plans import CrossPlan, EnginePlan, SignalPlan, SweepInputs, make_plan
from cracktrader.sweeps.request import SweepRequest
from cracktrader.sweeps.sweep import run_plan

runner = CliRunner()
# About 3,600 hourly synthetic bars: enough trades, stops and drawdowns to tell any difference apart.
RANGE: dict[str, Any] = {
    "symbols": "BTC/USDT",
    "timeframe": "1h",
    "start": "2023-01-01",
    "end": "2023-06-01",
    "exchange": "synthetic",
}
ALL = tuple(METRIC_KEYS)


def single_backtest_metrics(strategy: str, params: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """The metrics of one ordinary backtest of these params, with the sweep's range and costs."""
    symbols = kw.pop("symbols", RANGE["symbols"])
    config = BacktestConfig(
        strategy_name=strategy,
        strategy_params=params,
        symbols=[symbols] if isinstance(symbols, str) else symbols,
        timeframe=kw.pop("timeframe", RANGE["timeframe"]),
        start_date=kw.pop("start", RANGE["start"]),
        end_date=kw.pop("end", RANGE["end"]),
        exchange=kw.pop("exchange", RANGE["exchange"]),
        **kw,
    )
    return run_prepared(prepare_backtest(config)).metrics


def assert_rows_equal_backtests(result: SweepResult, strategy: str, sample: int | None = None, **kw: Any) -> None:
    """Every row (or every `sample`-th) equals its single backtest exactly, metric by metric."""
    rows = result.rows if sample is None else result.rows[::sample]
    assert rows
    for row in rows:
        expected = single_backtest_metrics(strategy, row.params, **kw)
        assert row.metrics == {name: expected[name] for name in result.metrics}, row.params


def test_range_end_is_inclusive_like_the_issue_example() -> None:
    assert parse_range("5:50:5") == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
    assert parse_range("20:200:20")[-1] == 200
    assert parse_range("1:3") == [1, 2, 3]
    assert parse_range("0.1:0.3:0.1") == [0.1, 0.2, 0.3]
    assert parse_range("5,8,13") == [5, 8, 13]
    assert parse_grid_option("fast=5:15:5") == ("fast", [5, 10, 15])


@pytest.mark.parametrize("raw", ["5:1", "1:5:0", "1:5:-1", "a:b", "1:2:3:4"])
def test_bad_range_is_a_grid_error(raw: str) -> None:
    with pytest.raises(InvalidGridError):
        parse_range(raw)


def test_unknown_grid_parameter_is_an_error_not_a_skip() -> None:
    with pytest.raises(InvalidGridError, match="fsat"):
        sweep("SmaCross", {"fsat": [5]}, **RANGE)


def test_combinations_the_schema_rejects_are_skipped_with_the_reason() -> None:
    result = sweep("SmaCross", {"fast": [10, 30], "slow": [20, 30]}, commission=0.001, **RANGE)
    assert [r.params for r in result.rows] == [{"fast": 10, "slow": 20}, {"fast": 10, "slow": 30}]
    skipped = [(s.index, s.params) for s in result.skipped]
    assert skipped == [(2, {"fast": 30, "slow": 20}), (3, {"fast": 30, "slow": 30})]
    assert "fast (30) must be smaller than slow (20)" in result.skipped[0].reason
    assert result.total == 4 and result.evaluated == 2


VECTORIZED_GRIDS: list[tuple[str, dict[str, Any], type]] = [
    ("SmaCross", {"fast": [3, 5, 8], "slow": [13, 21], "stop_loss": [None, 0.02]}, CrossPlan),
    ("EmaCross", {"fast": [4, 9], "slow": [12, 26], "take_profit": [None, 0.03], "size": [1.0, 0.5]}, CrossPlan),
    ("TestStrategy", {"period": [5, 10], "slow": [None, 30], "threshold": [0.0, 0.01]}, CrossPlan),
    ("RsiMeanReversion", {"period": [7, 14], "oversold": [25.0, 30.0], "overbought": [65.0, 75.0]}, SignalPlan),
    ("BollingerReversion", {"period": [10, 20], "stdev": [1.5, 2.0], "stop_loss": [None, 0.03]}, SignalPlan),
    ("MacdTrend", {"fast": [6, 12], "slow": [20, 26], "signal": [5, 9]}, SignalPlan),
    ("DonchianBreakout", {"entry_period": [10, 20], "exit_period": [5, 10], "take_profit": [None, 0.05]}, SignalPlan),
]


@pytest.mark.parametrize(("strategy", "grid", "plan"), VECTORIZED_GRIDS, ids=[g[0] for g in VECTORIZED_GRIDS])
def test_every_vectorized_builtin_sweep_equals_its_single_backtests(
    strategy: str, grid: dict[str, Any], plan: type
) -> None:
    costs = {"commission": 0.001, "slippage_bps": 2.0}
    result = sweep(strategy, grid, metrics=ALL, workers=2, **costs, **RANGE)
    assert not result.skipped and len(result.rows) == math.prod(len(v) for v in grid.values())
    cls = get_strategy(strategy)
    expanded = expand(cls, grid)
    prepared = prepare_backtest(BacktestConfig(strategy_name=strategy, symbols=["BTC/USDT"], exchange="synthetic"))
    assert isinstance(make_plan(SweepInputs(cls, prepared.data, prepared.sim, ALL), expanded.valid), plan)
    assert_rows_equal_backtests(result, strategy, **costs)


# Metric choices reading neither, one or both of the fused kernel's skippable passes (returns, drawdown).
METRIC_SUBSETS: list[tuple[str, ...]] = [
    ("total_return", "exposure", "final_equity", "total_trades", "fees_paid"),
    ("sharpe_ratio",),
    ("calmar_ratio", "max_drawdown_duration_days"),
    ("volatility", "max_drawdown", "cagr"),
]


@pytest.mark.parametrize("strategy", ["SmaCross", "RsiMeanReversion", "DonchianBreakout"])
def test_a_sweep_of_a_few_metrics_gives_the_values_of_a_sweep_of_all(strategy: str) -> None:
    grid = {
        "SmaCross": {"fast": [3, 8], "slow": [13, 21]},
        "RsiMeanReversion": {"period": [7, 14], "oversold": [25.0, 30.0]},
        "DonchianBreakout": {"entry_period": [10, 20], "exit_period": [5, 10]},
    }[strategy]
    costs = {"commission": 0.001, "slippage_bps": 2.0}
    full = {r.index: r.metrics for r in sweep(strategy, grid, metrics=ALL, cache=False, **costs, **RANGE).rows}
    for subset in METRIC_SUBSETS:
        rows = sweep(strategy, grid, metrics=subset, cache=False, **costs, **RANGE).rows
        assert len(rows) == len(full)
        for row in rows:
            # repr: the same float bits (and None where the full sweep has None).
            assert {m: repr(v) for m, v in row.metrics.items()} == {m: repr(full[row.index][m]) for m in subset}


def test_shorts_latency_and_two_symbols_match_single_backtests() -> None:
    kw: dict[str, Any] = {
        "commission": 0.0005,
        "latency_bars": 2,
        "allow_short": True,
        "initial_cash": 2_500.0,
        "symbols": ["BTC/USDT", "ETH/USDT"],
    }
    rng = {k: v for k, v in RANGE.items() if k != "symbols"}
    result = sweep("SmaCross", {"fast": [4, 7], "slow": [15, 30], "stop_loss": [None, 0.01]}, metrics=ALL, **kw, **rng)
    assert len(result.rows) == 8
    assert_rows_equal_backtests(result, "SmaCross", **kw)
    rsi = sweep("RsiMeanReversion", {"period": [9, 14]}, metrics=ALL, **kw, **rng)
    assert_rows_equal_backtests(rsi, "RsiMeanReversion", **kw)


def test_one_symbol_crossovers_with_latency_and_costs_match_single_backtests() -> None:
    # One symbol without stops runs the fused crossover kernel: every row against its own backtest.
    kw: dict[str, Any] = {"commission": 0.0005, "slippage_bps": 3.0, "latency_bars": 3, "initial_cash": 2_500.0}
    grid = {"fast": [3, 6, 9], "slow": [12, 40], "size": [1.0, 0.5]}
    result = sweep("EmaCross", grid, metrics=ALL, workers=2, **kw, **RANGE)
    assert len(result.rows) == 12
    assert_rows_equal_backtests(result, "EmaCross", **kw)


def test_event_driven_strategies_sweep_through_the_engine_in_worker_processes() -> None:
    result = sweep("SmaCrossEvents", {"fast": [5, 10], "slow": [20, 40]}, metrics=ALL, workers=2, **RANGE)
    assert len(result.rows) == 4
    assert_rows_equal_backtests(result, "SmaCrossEvents")
    hold = sweep("BuyAndHold", {"size": [0.5, 1.0]}, metrics=ALL, workers=2, commission=0.002, **RANGE)
    assert_rows_equal_backtests(hold, "BuyAndHold", commission=0.002)


def test_exchange_rules_sweep_through_the_engine_and_match() -> None:
    result = sweep("SmaCross", {"fast": [5, 10], "slow": [30]}, metrics=ALL, exchange_rules=True, **RANGE)
    assert_rows_equal_backtests(result, "SmaCross", exchange_rules=True)


def _plan_for(strategy: str, grid: dict[str, Any]) -> tuple[Any, list[Any]]:
    cls = get_strategy(strategy)
    expanded = expand(cls, grid)
    config = BacktestConfig(
        strategy_name=strategy,
        strategy_params=expanded.valid[0][0].params,
        symbols=["BTC/USDT"],
        timeframe="1h",
        start_date="2023-01-01",
        end_date="2023-04-01",
        exchange="synthetic",
    )
    prepared = prepare_backtest(config)
    return make_plan(SweepInputs(cls, prepared.data, prepared.sim, ALL), expanded.valid), expanded.valid


@pytest.mark.parametrize(
    ("strategy", "grid"),
    [
        ("SmaCross", {"fast": list(range(2, 12)), "slow": [20, 35]}),
        ("BollingerReversion", {"period": [8, 12, 16], "stdev": [1.0, 2.0, 3.0]}),
    ],
)
def test_rows_are_bit_identical_whatever_the_chunking_threads_or_completion_order(
    strategy: str, grid: dict[str, Any]
) -> None:
    plan, combos = _plan_for(strategy, grid)
    reference, _, _ = run_plan(plan, combos, workers=1, chunk_size=len(combos))
    for workers, chunk in [(1, 1), (2, 3), (2, 7), (3, 2)]:
        rows, done, cancelled = run_plan(plan, combos, workers=workers, chunk_size=chunk)
        assert (rows, done, cancelled) == (reference, len(combos), False)
    # Chunks completed in reverse order, then put in grid order: the same rows, bit for bit.
    backwards = [row for i in reversed(range(0, len(combos), 4)) for row in plan.evaluate(combos[i : i + 4])]
    assert sorted(backwards, key=lambda r: r.index) == reference
    as_floats = np.array([[v if v is not None else np.nan for v in r.metrics.values()] for r in reference], float)
    again = np.array([[v if v is not None else np.nan for v in r.metrics.values()] for r in rows], float)
    assert as_floats.tobytes() == again.tobytes()


def test_top_k_keeps_the_best_rows_by_the_sort_metric() -> None:
    grid = {"fast": list(range(2, 14)), "slow": [20, 30, 40]}
    full = sweep("SmaCross", grid, **RANGE)
    top = sweep("SmaCross", grid, top_k=5, sort="total_return", chunk_size=2, **RANGE)
    expected = sorted(full.rows, key=lambda r: (-float(r.metrics["total_return"] or -math.inf), r.index))[:5]
    assert top.rows == expected
    assert top.evaluated == len(full.rows) == 36
    dd = sweep("SmaCross", grid, top_k=3, sort="max_drawdown", **RANGE)
    assert [r.metrics["max_drawdown"] for r in dd.rows] == sorted(r.metrics["max_drawdown"] for r in full.rows)[:3]


def test_progress_reports_each_chunk_and_cancel_keeps_partial_results() -> None:
    seen: list[tuple[int, int]] = []
    grid = {"fast": list(range(2, 12)), "slow": [30]}
    sweep("SmaCross", grid, workers=1, chunk_size=3, progress=lambda d, t: seen.append((d, t)), **RANGE)
    assert seen == [(0, 10), (3, 10), (6, 10), (9, 10), (10, 10)]

    cancel = threading.Event()

    def stop_after_first(done: int, total: int) -> None:
        if done >= 3:
            cancel.set()

    # Without the chunk cache: the first sweep above completed this grid, so a cached rerun would have no chunk to stop.
    part = sweep(
        "SmaCross", grid, workers=1, chunk_size=3, progress=stop_after_first, cancel=cancel, cache=False, **RANGE
    )
    full = sweep("SmaCross", grid, workers=1, **RANGE)
    assert part.cancelled and part.evaluated == 3 and part.rows == full.rows[:3]
    # With threads, chunks already running finish (at most two per worker are in flight); no new one starts.
    cancel.clear()
    grid = {"fast": list(range(2, 32)), "slow": [40]}
    part = sweep("SmaCross", grid, workers=2, chunk_size=3, progress=stop_after_first, cancel=cancel, **RANGE)
    assert part.cancelled and 3 <= part.evaluated <= 12 and len(part.rows) == part.evaluated
    full = sweep("SmaCross", grid, workers=1, **RANGE)
    assert part.rows == [r for r in full.rows if r.index in {p.index for p in part.rows}]


def test_sweep_is_exported_next_to_the_sdk() -> None:
    assert cracktrader.sweep is sweep


def test_cli_sweep_prints_the_best_rows_and_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "results.parquet"
    args = ["sweep", "--strategy", "SmaCross", "--grid", "fast=5:15:5", "--grid", "slow=10:30:10"]
    args += ["--symbol", "BTC/USDT", "--timeframe", "1h", "--start", "2023-01-01", "--end", "2023-06-01"]
    args += ["--exchange", "synthetic", "--commission", "0.001", "--param", "stop_loss=0.05", "--top", "3"]
    result = runner.invoke(app, [*args, "--sort", "total_return", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "SmaCross: best 3 of 7 by total_return" in result.output
    assert "skipped 2 combination(s)" in result.output
    table = pq.read_table(out)
    assert table.column_names == ["stop_loss", "fast", "slow", *sweep_defaults()]
    assert table.num_rows == 7
    first = table.slice(0, 1).to_pylist()[0]
    expected = single_backtest_metrics("SmaCross", {"fast": 5, "slow": 10, "stop_loss": 0.05}, commission=0.001)
    assert first == {"stop_loss": 0.05, "fast": 5, "slow": 10, **{k: expected[k] for k in sweep_defaults()}}
    csv_out = tmp_path / "results.csv"
    again = runner.invoke(app, [*args, "--out", str(csv_out)])
    assert again.exit_code == 0, again.output
    assert pacsv.read_csv(csv_out).num_rows == 7


def sweep_defaults() -> list[str]:
    from cracktrader.sweeps import DEFAULT_METRICS

    return list(DEFAULT_METRICS)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--grid", "fast=9:1"], "end is below the start"),
        (["--grid", "fast"], "--grid expects name="),
        (["--grid", "fast=5", "--sort", "nope"], "unknown metric"),
        (["--grid", "fast=5", "--commission", "5"], "commission"),
    ],
)
def test_cli_sweep_bad_input_exits_2_with_one_line(extra: list[str], message: str) -> None:
    args = ["sweep", "--strategy", "SmaCross", "--symbol", "BTC/USDT", "--exchange", "synthetic", *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_engine_plan_is_chosen_for_event_strategies() -> None:
    plan, _ = _plan_for("SmaCrossEvents", {"fast": [5], "slow": [20]})
    assert isinstance(plan, EnginePlan)


def test_an_event_sweep_forks_workers_only_in_a_single_threaded_process() -> None:
    import importlib
    import threading

    sweep_module = importlib.import_module("cracktrader.sweeps.sweep")  # the package exports a function of that name

    alone = threading.active_count() == 1
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        assert sweep_module._may_fork() is False  # a server's threads would be copied mid-operation
    finally:
        stop.set()
        other.join()
    assert sweep_module._may_fork() is alone


def test_a_server_sweep_job_hands_back_its_rows_best_first_with_json_safe_metrics() -> None:
    # Ranked in the worker process, so the server stores them in this order without sorting on its event loop.
    grid = {"fast": [2, 5, 10], "slow": [20, 60, 90]}
    metrics = ["total_return", "sharpe_ratio", "total_trades"]
    request = SweepRequest(
        strategy_name="SmaCross",
        symbols=["BTC/USDT"],
        timeframe="1h",
        start_date="2023-01-01T00:00:00Z",
        end_date="2023-01-05T00:00:00Z",
        exchange="synthetic",
        grid=grid,
        metrics=metrics,
        sort="sharpe_ratio",
    )
    outcome = run_sweep_job(SweepJob("sweep-1", request, get_settings()), slot=0)
    in_grid_order = sweep("SmaCross", grid, "BTC/USDT", "1h", "2023-01-01", "2023-01-05", "synthetic", metrics=metrics)
    assert outcome.status == "completed"
    # Slow windows longer than the 96 bars never trade: no Sharpe ratio, ranked last (in grid order).
    assert [r.index for r in outcome.rows] == [0, 3, 6, 1, 2, 4, 5, 7, 8]
    assert [r.metrics["sharpe_ratio"] for r in outcome.rows[3:]] == [None] * 6
    by_index = {r.index: r for r in in_grid_order.rows}
    assert all(r.params == by_index[r.index].params and r.metrics == by_index[r.index].metrics for r in outcome.rows)
    values = [v for r in outcome.rows for v in r.metrics.values()]
    assert all(v is None or math.isfinite(v) for v in values)
