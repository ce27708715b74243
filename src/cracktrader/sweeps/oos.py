"""What walk-forward and CPCV share: the run's time axis, a sweep or a backtest over a span of it, stitched equity.

A span's sweep is `sweep(...)` and its backtest the ordinary `prepare_backtest` + `run_prepared` over the span's
dates, so a test window's result is exactly the plain backtest of that window: as in any backtest, indicators
start from the window's first bar (no warm-up from earlier bars) and nothing after its end is loaded.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from cracktrader.data.candles import ms_to_iso
from cracktrader.data.sources.base import CandleSource
from cracktrader.data.timeframes import Timeframe, parse_timeframe
from cracktrader.engine.backtest import BacktestResult, fill_summary
from cracktrader.engine.metrics import METRIC_KEYS, compute_metrics
from cracktrader.engine.strategy import Strategy
from cracktrader.errors import CracktraderError, UserInputError
from cracktrader.runs.backtest import prepare_backtest, run_prepared
from cracktrader.runs.config import BacktestConfig
from cracktrader.settings import Settings, get_settings
from cracktrader.strategies.registry import load_registry
from cracktrader.sweeps.executors import dask_client
from cracktrader.sweeps.grid import expand
from cracktrader.sweeps.plans import SweepRow
from cracktrader.sweeps.sweep import SweepResult, check_executor, rank_key, sweep
from cracktrader.sweeps.windows import Span

if TYPE_CHECKING:
    from distributed import Client

Metrics = dict[str, float | int | None]


class SpanReport(BaseModel):
    """Bars [start, stop) of the run and their dates: from start_date inclusive to end_date exclusive."""

    start: int
    stop: int
    start_date: str
    end_date: str


class EquityCurve(BaseModel):
    """Out-of-sample equity stitched across test windows (each window's capital is the previous one's final)."""

    timestamp: list[int]
    equity: list[float]
    metrics: Metrics


class StudyCancelledError(Exception):
    """The study's `cancel` event was set: it stops at the next chunk of a sweep or before the next backtest."""


@dataclass(frozen=True, slots=True)
class Piece:
    """What stitching keeps of one test backtest: its curve, round trips, fees and buy-and-hold return."""

    timestamp: np.ndarray
    equity: np.ndarray
    in_market: np.ndarray
    pnls: np.ndarray
    returns: np.ndarray
    fees: float
    buy_and_hold: float
    metrics: Metrics

    @classmethod
    def of(cls, result: BacktestResult) -> Piece:
        """What stitching needs of a backtest's result."""
        fills = fill_summary(result.orders)
        bh = result.metrics.get("buy_and_hold_return")
        return cls(
            result.timestamp,
            result.equity,
            result.in_market,
            fills.pnls,
            fills.returns,
            fills.fees,
            0.0 if bh is None else float(bh),
            dict(result.metrics),
        )


@dataclass(slots=True)
class Study:
    """A strategy, grid, symbols, range and costs resolved once, with the run's time axis."""

    cls: type[Strategy]
    grid: Mapping[str, Any]
    params: dict[str, Any]
    symbols: list[str]
    timeframe: Timeframe
    exchange: str
    metric: str
    options: dict[str, Any]
    settings: Settings
    source: CandleSource | None
    workers: int | None
    executor: str | Client | None = None
    timestamp: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    end_ms: int = 0
    initial_cash: float = 0.0
    periods_per_year: float = 0.0
    cancel: threading.Event | None = None

    @property
    def bars(self) -> int:
        """Bars of the whole run."""
        return int(self.timestamp.shape[0])

    def bounds(self, span: Span) -> tuple[int, int]:
        """The span's [start, end) in ms: the next bar's open ends it, or the run's end after the last bar."""
        end = int(self.timestamp[span.stop]) if span.stop < self.bars else self.end_ms
        return int(self.timestamp[span.start]), end

    def report(self, span: Span) -> SpanReport:
        """The span's bars and dates as reported."""
        start, end = self.bounds(span)
        return SpanReport(start=span.start, stop=span.stop, start_date=ms_to_iso(start), end_date=ms_to_iso(end))

    def sweep(self, span: Span) -> SweepResult:
        """The grid swept over the span, ranked by the study's metric."""
        self.check_cancel()
        start, end = self.bounds(span)
        result = sweep(
            self.cls,
            self.grid,
            self.symbols,
            self.timeframe.name,
            str(start),
            str(end),
            self.exchange,
            metrics=(self.metric,),
            params=self.params,
            sort=self.metric,
            workers=self.workers,
            executor=self.executor,
            settings=self.settings,
            source=self.source,
            cancel=self.cancel,
            **self.options,
        )
        if result.cancelled:
            raise StudyCancelledError
        return result

    @contextmanager
    def executing(self) -> Iterator[None]:
        """Keep one Dask client open for all the study's sweeps (else each window would start its own cluster)."""
        given = self.executor
        if not check_executor(given) or not isinstance(given, str):
            yield
            return
        with dask_client(given, self.workers or os.cpu_count() or 1, self.cancel) as client:
            self.executor = client
            try:
                yield
            finally:
                self.executor = given

    def check_cancel(self) -> None:
        """Raise StudyCancelledError once the study's `cancel` event is set."""
        if self.cancel is not None and self.cancel.is_set():
            raise StudyCancelledError

    def backtest(self, params: Mapping[str, Any], span: Span) -> BacktestResult:
        """The ordinary backtest of `params` over the span's dates (what `cracktrader backtest` runs)."""
        self.check_cancel()
        start, end = self.bounds(span)
        prepared = prepare_backtest(
            self.config(dict(params), str(start), str(end)),
            settings=self.settings,
            source=self.source,
            strategy_cls=self.cls,
        )
        if prepared.data.n_bars != len(span):
            # The store changed under the study (an import or a sync): its windows no longer mean what they did.
            raise CracktraderError(
                f"bars {span.start}..{span.stop} loaded as {prepared.data.n_bars} bars, expected {len(span)}: "
                "the stored candles changed during the run"
            )
        return run_prepared(prepared)

    def config(self, params: dict[str, Any], start: str | None, end: str | None) -> BacktestConfig:
        """The backtest request of these params and dates, with the study's symbols, exchange and costs."""
        return BacktestConfig(
            strategy_name=self.cls.name,
            strategy_params=params,
            symbols=self.symbols,
            timeframe=self.timeframe.name,
            start_date=start,
            end_date=end,
            exchange=self.exchange,
            **self.options,
        )


def open_study(
    strategy: str | type[Strategy],
    grid: Mapping[str, Any],
    symbols: str | Sequence[str],
    timeframe: str,
    start: str | None,
    end: str | None,
    exchange: str | None,
    *,
    metric: str,
    params: Mapping[str, Any] | None,
    settings: Settings | None,
    source: CandleSource | None,
    workers: int | None,
    options: dict[str, Any],
    executor: str | Client | None = None,
) -> Study:
    """Check the metric and grid, then load the whole range once for its time axis (as a backtest loads it)."""
    if metric not in METRIC_KEYS:
        raise UserInputError(
            f"unknown metric {metric!r}; available: {', '.join(METRIC_KEYS)}",
            details={"metric": metric, "available": list(METRIC_KEYS)},
        )
    settings = settings or get_settings()
    cls = strategy if isinstance(strategy, type) else load_registry(settings).get(strategy)
    expanded = expand(cls, grid, params)
    if not expanded.valid:
        first = expanded.skipped[0] if expanded.skipped else None
        raise UserInputError(
            "the strategy rejects every combination of the grid"
            + (f", e.g. {first.params}: {first.reason}" if first else ""),
            details={"skipped": len(expanded.skipped)},
        )
    study = Study(
        cls,
        grid,
        dict(params or {}),
        [symbols] if isinstance(symbols, str) else list(symbols),
        parse_timeframe(timeframe),
        exchange or settings.default_exchange,
        metric,
        options,
        settings,
        source,
        workers,
        executor,
    )
    check_executor(executor)
    prepared = prepare_backtest(
        study.config(expanded.valid[0][0].params, start, end), settings=settings, source=source, strategy_cls=cls
    )
    study.timeframe = prepared.timeframe
    study.symbols = prepared.config.symbols
    study.timestamp = np.asarray(prepared.data.timestamp)
    # The next bar's open ends the last span, so it loads exactly the bars the whole range loaded.
    study.end_ms = prepared.timeframe.next(int(study.timestamp[-1])) if study.bars else 0
    study.initial_cash = prepared.sim.initial_cash
    study.periods_per_year = prepared.data.periods_per_year
    return study


def best_row(rows: Sequence[SweepRow], metric: str) -> SweepRow:
    """The best row by `metric` (sweep's ranking: missing values last, ties in grid order)."""
    return sorted(rows, key=rank_key(metric))[0]


def in_sample(row: SweepRow, metric: str) -> float | None:
    """The row's value of `metric`, None when undefined."""
    value = row.metrics.get(metric)
    return None if value is None or not np.isfinite(float(value)) else float(value)


def stitch(pieces: Sequence[Piece], initial_cash: float, periods_per_year: float) -> EquityCurve:
    """Chain test curves: each starts with the previous one's final equity; metrics over the whole chain."""
    scale = 1.0
    equity, pnls, fees = [], [], 0.0
    growth = 1.0
    for piece in pieces:
        equity.append(piece.equity * scale)
        pnls.append(piece.pnls * scale)
        fees += piece.fees * scale
        growth *= 1.0 + piece.buy_and_hold
        if piece.equity.shape[0]:
            scale *= float(piece.equity[-1]) / initial_cash
    ts = np.concatenate([p.timestamp for p in pieces]) if pieces else np.empty(0, dtype=np.int64)
    eq = np.concatenate(equity) if pieces else np.empty(0)
    metrics = compute_metrics(
        equity=eq,
        initial_cash=initial_cash,
        timestamps_ms=ts,
        periods_per_year=periods_per_year,
        trade_pnls=np.concatenate(pnls) if pieces else np.empty(0),
        trade_returns=np.concatenate([p.returns for p in pieces]) if pieces else np.empty(0),
        fees_paid=fees,
        in_market=np.concatenate([p.in_market for p in pieces]) if pieces else np.empty(0, dtype=np.bool_),
        buy_and_hold_return=growth - 1.0,
    )
    return EquityCurve(timestamp=[int(t) for t in ts], equity=[float(v) for v in eq], metrics=metrics)


def write_json(report: BaseModel, path: str) -> None:
    """A report as JSON (.json only: the curves and nested splits do not fit a table)."""
    if not path.endswith(".json"):
        raise UserInputError(f"--out must end in .json, got {path!r}")
    with open(path, "w") as fh:
        json.dump(report.model_dump(mode="json"), fh)
