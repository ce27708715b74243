"""Walk-forward and CPCV: windows and splits equal skfolio's, test windows equal plain backtests, reports and CLI."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from skfolio.model_selection import CombinatorialPurgedCV, WalkForward
from typer.testing import CliRunner

import cracktrader
from cracktrader.cli import app
from cracktrader.data.timeframes import parse_timeframe
from cracktrader.errors import UserInputError
from cracktrader.runs.backtest import prepare_backtest, run_prepared
from cracktrader.runs.config import BacktestConfig
from cracktrader.sweeps import CpcvReport, InvalidWindowsError, WalkForwardReport, cpcv, sweep, walk_forward
from cracktrader.sweeps.oos import StudyCancelledError
from cracktrader.sweeps.windows import Span, cpcv_plan, parse_length, walk_forward_windows

runner = CliRunner()
# About 3,600 hourly synthetic bars; a small grid keeps each window's sweep quick.
RANGE: dict[str, Any] = {
    "symbols": "BTC/USDT",
    "timeframe": "1h",
    "start": "2023-01-01",
    "end": "2023-06-01",
    "exchange": "synthetic",
}
GRID = {"fast": [5, 10, 20], "slow": [30, 60]}
COSTS: dict[str, Any] = {"commission": 0.001, "slippage_bps": 2.0}


def plain_backtest(params: dict[str, Any], start: str, end: str, **costs: Any) -> Any:
    """`cracktrader backtest` of these params between these dates."""
    config = BacktestConfig(
        strategy_name="SmaCross",
        strategy_params=params,
        symbols=[RANGE["symbols"]],
        timeframe=RANGE["timeframe"],
        start_date=start,
        end_date=end,
        exchange=RANGE["exchange"],
        **costs,
    )
    return run_prepared(prepare_backtest(config))


def indices(spans: tuple[Span, ...] | list[Span]) -> np.ndarray:
    return np.concatenate([np.arange(s.start, s.stop) for s in spans]) if spans else np.empty(0, dtype=int)


# -- window arithmetic ---------------------------------------------------------------------------------------


def test_rolling_windows_slide_by_the_test_length() -> None:
    windows = walk_forward_windows(100, 30, 20)
    assert [(w.train.start, w.train.stop, w.test.start, w.test.stop) for w in windows] == [
        (0, 30, 30, 50),
        (20, 50, 50, 70),
        (40, 70, 70, 90),
    ]


def test_anchored_windows_all_train_from_the_first_bar() -> None:
    windows = walk_forward_windows(100, 30, 20, anchored=True)
    assert [(w.train.start, w.train.stop) for w in windows] == [(0, 30), (0, 50), (0, 70)]


def test_uneven_end_drops_the_short_last_test_unless_partial_last() -> None:
    assert walk_forward_windows(100, 30, 20)[-1].test == Span(70, 90)
    assert walk_forward_windows(100, 30, 20, partial_last=True)[-1].test == Span(90, 100)


def test_step_longer_than_test_leaves_gaps_and_purge_separates_train_from_test() -> None:
    windows = walk_forward_windows(100, 30, 10, 25, purge=5)
    assert [(w.train.start, w.train.stop, w.test.start, w.test.stop) for w in windows] == [
        (0, 30, 35, 45),
        (25, 55, 60, 70),
        (50, 80, 85, 95),
    ]


def test_step_shorter_than_test_is_refused() -> None:
    with pytest.raises(InvalidWindowsError, match=r"step \(5 bars\) must be at least the test length \(10 bars\)"):
        walk_forward_windows(100, 30, 10, 5)


def test_too_few_bars_for_one_window_is_a_clear_error() -> None:
    with pytest.raises(InvalidWindowsError, match="the run has 40 bars, too few for one window"):
        walk_forward_windows(40, 30, 20)


def test_lengths_are_bars_or_durations_of_whole_bars() -> None:
    hour = parse_timeframe("1h")
    assert parse_length(2000, hour, "train") == 2000
    assert parse_length("500", hour, "test") == 500
    assert parse_length("90d", hour, "train") == 2160
    assert parse_length("2w", parse_timeframe("1d"), "train") == 14
    with pytest.raises(InvalidWindowsError, match="not a whole number of 1h bars"):
        parse_length("90m", hour, "train")
    with pytest.raises(InvalidWindowsError, match="train must be a number of bars or a duration"):
        parse_length("ninety", hour, "train")
    with pytest.raises(InvalidWindowsError, match="test must be at least 1 bar"):
        parse_length(0, hour, "test")


# -- equal to skfolio ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "train", "test", "anchored", "partial_last", "purge"),
    [
        (100, 30, 10, False, False, 0),
        (105, 30, 10, False, True, 0),
        (105, 30, 10, True, False, 0),
        (105, 30, 10, True, True, 4),
        (3624, 2000, 500, False, False, 7),
        (1000, 1, 1, False, False, 0),
    ],
)
def test_walk_forward_windows_equal_skfolio(
    n: int, train: int, test: int, anchored: bool, partial_last: bool, purge: int
) -> None:
    ref = WalkForward(test, train, expand_train=anchored, reduce_test=partial_last, purged_size=purge)
    expected = list(ref.split(np.zeros((n, 1))))
    ours = walk_forward_windows(n, train, test, anchored=anchored, purge=purge, partial_last=partial_last)
    assert len(ours) == len(expected) == ref.get_n_splits(np.zeros((n, 1)))
    for window, (train_idx, test_idx) in zip(ours, expected, strict=True):
        assert np.array_equal(indices([window.train]), train_idx)
        assert np.array_equal(indices([window.test]), test_idx)


@pytest.mark.parametrize(
    ("n", "folds", "tests", "purge", "embargo"),
    [
        (12, 3, 2, 0, 0),
        (12, 3, 2, 1, 0),
        (12, 3, 2, 0, 1),
        (103, 6, 2, 3, 2),
        (257, 7, 3, 5, 4),
        (50, 5, 4, 2, 1),
        (3624, 10, 2, 24, 12),
    ],
)
def test_cpcv_splits_and_paths_equal_skfolio(n: int, folds: int, tests: int, purge: int, embargo: int) -> None:
    ref = CombinatorialPurgedCV(folds, tests, purged_size=purge, embargo_size=embargo)
    expected = list(ref.split(np.zeros((n, 1))))
    plan = cpcv_plan(n, folds, tests, purge=purge, embargo=embargo)
    assert len(plan.splits) == len(expected) == ref.n_splits
    for split, (train_idx, test_list) in zip(plan.splits, expected, strict=True):
        assert np.array_equal(indices(split.train), train_idx)
        assert [indices([s]).tolist() for s in split.tests] == [t.tolist() for t in test_list]
    assert len(plan.paths) == ref.n_test_paths
    path_ids = ref.get_path_ids()
    for i, split in enumerate(plan.splits):
        for j, fold in enumerate(split.test_folds):
            assert plan.paths[path_ids[i, j]][fold] == i


@pytest.mark.parametrize(
    ("folds", "tests", "purge", "embargo", "message"),
    [
        (2, 1, 0, 0, "n_folds must be at least 3"),
        (5, 5, 0, 0, "n_test_folds must be between 1 and n_folds - 1"),
        (5, 2, -1, 0, "purge and embargo must not be negative"),
        (5, 2, 10, 10, r"purge \+ embargo \(20\) must be smaller than a fold's bars minus one"),
        (20, 10, 0, 0, "make 184,756 splits, more than 500"),
    ],
)
def test_bad_cpcv_arguments_are_clear_errors(folds: int, tests: int, purge: int, embargo: int, message: str) -> None:
    with pytest.raises(InvalidWindowsError, match=message):
        cpcv_plan(100, folds, tests, purge=purge, embargo=embargo)


# -- walk-forward runs -----------------------------------------------------------------------------------------


def test_each_test_window_equals_a_plain_backtest_of_its_dates() -> None:
    calls: list[tuple[int, int]] = []
    report = walk_forward(
        "SmaCross", GRID, **RANGE, train=1000, test=500, progress=lambda d, t: calls.append((d, t)), **COSTS
    )
    assert calls == [(i, 5) for i in range(6)]
    assert report.bars == 3624
    assert [(w.test.start, w.test.stop) for w in report.windows] == [
        (1000, 1500),
        (1500, 2000),
        (2000, 2500),
        (2500, 3000),
        (3000, 3500),
    ]
    for window in report.windows:
        direct = plain_backtest(window.params, window.test.start_date, window.test.end_date, **COSTS)
        assert direct.bars_processed == 500
        assert window.out_of_sample == direct.metrics


def test_each_window_runs_the_best_row_of_the_sweep_of_its_train_dates() -> None:
    report = walk_forward("SmaCross", GRID, **RANGE, train="42d", test="21d", metric="total_return", **COSTS)
    assert (report.train, report.test, report.step) == (1008, 504, 504)
    for window in report.windows[:2]:
        swept = sweep(
            "SmaCross",
            GRID,
            RANGE["symbols"],
            RANGE["timeframe"],
            window.train.start_date,
            window.train.end_date,
            RANGE["exchange"],
            metrics=("total_return",),
            **COSTS,
        )
        best = swept.best(1, by="total_return")[0]
        assert window.params == best.params
        assert window.in_sample == best.metrics["total_return"]


def test_stitched_equity_chains_the_test_windows_capital() -> None:
    report = walk_forward("SmaCross", GRID, **RANGE, train=1000, test=500, anchored=True, **COSTS)
    stitched = report.stitched
    assert len(stitched.equity) == len(stitched.timestamp) == 5 * 500
    first = plain_backtest(
        report.windows[0].params, report.windows[0].test.start_date, report.windows[0].test.end_date, **COSTS
    )
    assert stitched.equity[:500] == first.equity.tolist()
    growth = math.prod(1.0 + float(w.out_of_sample["total_return"] or 0.0) for w in report.windows)
    assert stitched.equity[-1] == pytest.approx(10_000.0 * growth, rel=1e-12)
    assert stitched.metrics["total_return"] == pytest.approx(growth - 1.0, rel=1e-9)
    assert stitched.metrics["total_trades"] == sum(int(w.out_of_sample["total_trades"] or 0) for w in report.windows)
    assert stitched.timestamp == sorted(stitched.timestamp)


def test_later_data_never_changes_an_earlier_window() -> None:
    short = walk_forward("SmaCross", GRID, **{**RANGE, "end": "2023-04-01"}, train=1000, test=500, **COSTS)
    long = walk_forward("SmaCross", GRID, **RANGE, train=1000, test=500, **COSTS)
    assert len(short.windows) < len(long.windows)
    assert [w.model_dump() for w in short.windows] == [w.model_dump() for w in long.windows[: len(short.windows)]]


def test_a_set_cancel_event_stops_walk_forward_and_cpcv_before_their_first_sweep() -> None:
    cancel = threading.Event()
    cancel.set()
    done: list[tuple[int, int]] = []
    with pytest.raises(StudyCancelledError):
        walk_forward("SmaCross", GRID, **RANGE, train=1000, test=500, cancel=cancel, progress=lambda *p: done.append(p))
    with pytest.raises(StudyCancelledError):
        cpcv("SmaCross", GRID, **RANGE, n_folds=4, n_test_folds=2, cancel=cancel)
    assert done == [(0, 5)]


def test_event_driven_strategy_on_two_symbols_walks_forward_through_the_engine() -> None:
    symbols = ["BTC/USDT", "ETH/USDT"]
    rng = {**RANGE, "symbols": symbols, "end": "2023-03-01"}
    grid = {"fast": [5, 10], "slow": [20, 40]}
    report = walk_forward("SmaCrossEvents", grid, **rng, train=600, test=300, workers=2, **COSTS)
    assert report.symbols == symbols
    assert (report.bars, len(report.windows)) == (1416, 2)
    for window in report.windows:
        config = BacktestConfig(
            strategy_name="SmaCrossEvents",
            strategy_params=window.params,
            symbols=symbols,
            timeframe="1h",
            start_date=window.test.start_date,
            end_date=window.test.end_date,
            exchange="synthetic",
            **COSTS,
        )
        assert window.out_of_sample == run_prepared(prepare_backtest(config)).metrics


def test_walk_forward_is_exported_like_sweep() -> None:
    assert cracktrader.walk_forward is walk_forward
    assert cracktrader.cpcv is cpcv
    assert {"walk_forward", "cpcv"} <= set(cracktrader.__all__)


def test_unknown_metric_and_fully_rejected_grid_are_user_errors() -> None:
    with pytest.raises(UserInputError, match="unknown metric 'sharpe'"):
        walk_forward("SmaCross", GRID, **RANGE, train=1000, test=500, metric="sharpe")
    with pytest.raises(UserInputError, match="rejects every combination of the grid"):
        walk_forward("SmaCross", {"fast": [50], "slow": [20]}, **RANGE, train=1000, test=500)
    with pytest.raises(InvalidWindowsError, match="too few for one window"):
        walk_forward("SmaCross", GRID, **RANGE, train=3000, test=1000)


# -- CPCV runs ---------------------------------------------------------------------------------------------------


def test_cpcv_fold_tests_equal_plain_backtests_and_paths_chain_them() -> None:
    calls: list[tuple[int, int]] = []
    report = cpcv(
        "SmaCross",
        GRID,
        **RANGE,
        n_folds=4,
        n_test_folds=2,
        purge=10,
        embargo=5,
        progress=lambda d, t: calls.append((d, t)),
        **COSTS,
    )
    assert calls == [(i, 6) for i in range(7)]
    assert (len(report.splits), len(report.paths)) == (6, 3)
    assert [(f.start, f.stop) for f in report.folds] == [(0, 906), (906, 1812), (1812, 2718), (2718, 3624)]
    for split in report.splits:
        for test in split.tests:
            direct = plain_backtest(split.params, test.span.start_date, test.span.end_date, **COSTS)
            assert test.metrics == direct.metrics
    for path in report.paths:
        assert len(path.splits) == 4
        returns = [
            next(t for t in report.splits[s].tests if t.fold == fold).metrics["total_return"]
            for fold, s in enumerate(path.splits)
        ]
        growth = math.prod(1.0 + float(r or 0.0) for r in returns)
        assert path.metrics["total_return"] == pytest.approx(growth - 1.0, rel=1e-9)


def test_cpcv_train_blocks_exclude_purge_and_embargo() -> None:
    report = cpcv("SmaCross", GRID, **RANGE, n_folds=4, n_test_folds=2, purge=10, embargo=5, **COSTS)
    # Split 2 tests folds 0 and 3: train is fold 1 and 2 less 15 bars after fold 0 and 10 before fold 3.
    assert [(b.start, b.stop) for b in report.splits[2].train] == [(906 + 15, 2718 - 10)]


# -- command line --------------------------------------------------------------------------------------------------

CLI_RANGE = [
    "--strategy",
    "SmaCross",
    "--grid",
    "fast=5,10,20",
    "--grid",
    "slow=30,60",
    "--symbol",
    "BTC/USDT",
    "--start",
    "2023-01-01",
    "--end",
    "2023-06-01",
    "--exchange",
    "synthetic",
    "--commission",
    "0.001",
]


def test_cli_walkforward_prints_windows_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["walkforward", *CLI_RANGE, "--train", "1000", "--test", "500", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "SmaCross: 5 walk-forward windows, best in sample by sharpe_ratio" in result.output
    assert "stitched out-of-sample, 2500 bars" in result.output
    report = WalkForwardReport.model_validate(json.loads(out.read_text()))
    expected = walk_forward("SmaCross", GRID, **RANGE, train=1000, test=500, commission=0.001)
    assert report == expected


def test_cli_cpcv_prints_splits_and_paths(tmp_path: Path) -> None:
    out = tmp_path / "cv.json"
    result = runner.invoke(
        app, ["walkforward", *CLI_RANGE, "--cpcv", "4:2", "--purge", "5", "--embargo", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "SmaCross: 6 CPCV splits" in result.output
    assert "3 paths" in result.output
    assert CpcvReport.model_validate(json.loads(out.read_text())).n_folds == 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "walk-forward needs --train and --test"),
        (["--cpcv", "6"], "--cpcv expects N_FOLDS:N_TEST_FOLDS such as 6:2, got '6'"),
        (["--cpcv", "4:2", "--train", "100"], "--cpcv takes no --train"),
        (["--train", "1000", "--test", "500", "--embargo", "3"], "--embargo applies to --cpcv only"),
        (["--train", "1000", "--test", "500", "--out", "r.csv"], "--out must end in .json"),
        (["--train", "1000", "--test", "500", "--step", "100"], "step (100 bars) must be at least the test length"),
        (["--train", "ten", "--test", "500"], "train must be a number of bars or a duration such as 90d"),
        (["--train", "1000", "--test", "500", "--metric", "nope"], "unknown metric 'nope'"),
        (["--cpcv", "3:3"], "n_test_folds must be between 1 and n_folds - 1"),
    ],
)
def test_cli_bad_arguments_exit_2_with_a_clear_message(extra: list[str], message: str) -> None:
    result = runner.invoke(app, ["walkforward", *CLI_RANGE, *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output
