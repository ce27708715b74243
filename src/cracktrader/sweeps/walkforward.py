"""`walk_forward`: sweep the grid on each train window, backtest its best combination on the following test window."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from cracktrader.data.sources.base import CandleSource
from cracktrader.data.timeframes import parse_timeframe
from cracktrader.engine.strategy import Strategy
from cracktrader.settings import Settings
from cracktrader.sweeps.oos import (
    EquityCurve,
    Metrics,
    Piece,
    SpanReport,
    best_row,
    in_sample,
    open_study,
    stitch,
    write_json,
)
from cracktrader.sweeps.sweep import SweepProgress
from cracktrader.sweeps.windows import parse_length, walk_forward_windows

if TYPE_CHECKING:
    from distributed import Client


class WindowReport(BaseModel):
    """One window: its train and test bars, the combination chosen in sample and its out-of-sample metrics."""

    index: int
    train: SpanReport
    test: SpanReport
    params: dict[str, Any]
    in_sample: float | None
    out_of_sample: Metrics


class WalkForwardReport(BaseModel):
    """Every window's choice and test result, and the test windows' equity stitched into one curve."""

    strategy: str
    symbols: list[str]
    timeframe: str
    exchange: str
    metric: str
    bars: int
    train: int
    test: int
    step: int
    purge: int
    anchored: bool
    partial_last: bool
    windows: list[WindowReport]
    stitched: EquityCurve

    def write(self, path: str | Path) -> Path:
        """Write the report as JSON."""
        write_json(self, str(path))
        return Path(path)


def walk_forward(
    strategy: str | type[Strategy],
    grid: Mapping[str, Any],
    symbols: str | Sequence[str],
    timeframe: str = "1h",
    start: str | None = None,
    end: str | None = None,
    exchange: str | None = None,
    *,
    train: int | str,
    test: int | str,
    step: int | str | None = None,
    anchored: bool = False,
    purge: int = 0,
    partial_last: bool = False,
    metric: str = "sharpe_ratio",
    params: Mapping[str, Any] | None = None,
    workers: int | None = None,
    executor: str | Client | None = None,
    progress: SweepProgress | None = None,
    cancel: threading.Event | None = None,
    settings: Settings | None = None,
    source: CandleSource | None = None,
    **options: Any,
) -> WalkForwardReport:
    """Walk forward over the run's bars; lengths are bars or durations such as "90d" (nominal bars of `timeframe`).

    Each train window [s - purge - train, s - purge) (from bar 0 when `anchored`) is swept with `sweep(...)`; the
    best combination by `metric` is backtested on the test window [s, s + test), s advancing by `step` (default:
    the test length). `options` are the backtest's costs and fills, as for `sweep`. A test window's result is the
    plain backtest of its dates: it starts flat with the initial cash and sees no bar outside the window.
    Setting `cancel` stops it after the sweep chunk in hand, raising StudyCancelledError.
    """
    tf = parse_timeframe(timeframe)
    train_bars, test_bars = parse_length(train, tf, "train"), parse_length(test, tf, "test")
    step_bars = test_bars if step is None else parse_length(step, tf, "step")
    study = open_study(
        strategy,
        grid,
        symbols,
        timeframe,
        start,
        end,
        exchange,
        metric=metric,
        params=params,
        settings=settings,
        source=source,
        workers=workers,
        options=options,
        executor=executor,
    )
    study.cancel = cancel
    windows = walk_forward_windows(
        study.bars, train_bars, test_bars, step_bars, anchored=anchored, purge=purge, partial_last=partial_last
    )
    reports, pieces = [], []
    if progress is not None:
        progress(0, len(windows))
    with study.executing():
        for i, window in enumerate(windows):
            swept = study.sweep(window.train)
            best = best_row(swept.rows, metric)
            piece = Piece.of(study.backtest(best.params, window.test))
            pieces.append(piece)
            reports.append(
                WindowReport(
                    index=i,
                    train=study.report(window.train),
                    test=study.report(window.test),
                    params=best.params,
                    in_sample=in_sample(best, metric),
                    out_of_sample=piece.metrics,
                )
            )
            if progress is not None:
                progress(i + 1, len(windows))
    return WalkForwardReport(
        strategy=study.cls.name,
        symbols=study.symbols,
        timeframe=tf.name,
        exchange=study.exchange,
        metric=metric,
        bars=study.bars,
        train=train_bars,
        test=test_bars,
        step=step_bars,
        purge=purge,
        anchored=anchored,
        partial_last=partial_last,
        windows=reports,
        stitched=stitch(pieces, study.initial_cash, study.periods_per_year),
    )
