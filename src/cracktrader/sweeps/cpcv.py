"""`cpcv`: combinatorial purged cross-validation of a grid, with each split's choice and every recombined path."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from cracktrader.data.sources.base import CandleSource
from cracktrader.engine.strategy import Strategy
from cracktrader.settings import Settings
from cracktrader.sweeps.oos import (
    Metrics,
    Piece,
    SpanReport,
    Study,
    best_row,
    in_sample,
    open_study,
    stitch,
    write_json,
)
from cracktrader.sweeps.plans import SweepRow
from cracktrader.sweeps.sweep import SweepProgress
from cracktrader.sweeps.windows import CpcvSplit, Span, cpcv_plan

if TYPE_CHECKING:
    from distributed import Client


class FoldTest(BaseModel):
    """One test fold of a split: its bars and the metrics of the split's combination backtested on them."""

    fold: int
    span: SpanReport
    metrics: Metrics


class SplitReport(BaseModel):
    """One split: its train blocks, the combination chosen on them and its result on each test fold."""

    index: int
    train: list[SpanReport]
    params: dict[str, Any]
    in_sample: float | None
    tests: list[FoldTest]


class PathReport(BaseModel):
    """One recombined path: for each fold the split whose test it takes, and the metrics of the stitched curve."""

    index: int
    splits: list[int]
    metrics: Metrics


class CpcvReport(BaseModel):
    """Each split's choice and test metrics, and every path's out-of-sample metrics."""

    strategy: str
    symbols: list[str]
    timeframe: str
    exchange: str
    metric: str
    bars: int
    n_folds: int
    n_test_folds: int
    purge: int
    embargo: int
    folds: list[SpanReport]
    splits: list[SplitReport]
    paths: list[PathReport]

    def write(self, path: str | Path) -> Path:
        """Write the report as JSON."""
        write_json(self, str(path))
        return Path(path)


def _choose(study: Study, blocks: Sequence[Span], metric: str) -> SweepRow:
    """The best combination over train blocks: each block swept on its own, scores averaged weighted by bars.

    Blocks are separated by test folds, so each is a backtest of its own (flat at its start); a block whose metric
    is undefined does not count, and a combination undefined on every block ranks last.
    """
    totals: dict[int, tuple[float, int]] = {}
    rows: dict[int, SweepRow] = {}
    for block in blocks:
        for row in study.sweep(block).rows:
            rows.setdefault(row.index, row)
            value = in_sample(row, metric)
            if value is not None:
                total, bars = totals.get(row.index, (0.0, 0))
                totals[row.index] = (total + value * len(block), bars + len(block))
    scored = [
        SweepRow(i, row.params, {metric: totals[i][0] / totals[i][1] if i in totals else None})
        for i, row in rows.items()
    ]
    return best_row(scored, metric)


def cpcv(
    strategy: str | type[Strategy],
    grid: Mapping[str, Any],
    symbols: str | Sequence[str],
    timeframe: str = "1h",
    start: str | None = None,
    end: str | None = None,
    exchange: str | None = None,
    *,
    n_folds: int,
    n_test_folds: int,
    purge: int = 0,
    embargo: int = 0,
    metric: str = "sharpe_ratio",
    params: Mapping[str, Any] | None = None,
    workers: int | None = None,
    executor: str | Client | None = None,
    progress: SweepProgress | None = None,
    cancel: threading.Event | None = None,
    settings: Settings | None = None,
    source: CandleSource | None = None,
    **options: Any,
) -> CpcvReport:
    """Cross-validate the grid over `n_folds` consecutive folds, `n_test_folds` of them tested in each split.

    Train bars exclude `purge` bars before each test block and `purge + embargo` after it (skfolio's
    `CombinatorialPurgedCV` index sets). Each split's best combination by `metric` is backtested on each of its
    test folds (a plain backtest of the fold's dates); each path chains one test of every fold. Setting `cancel`
    stops it after the sweep chunk in hand, raising StudyCancelledError.
    """
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
    plan = cpcv_plan(study.bars, n_folds, n_test_folds, purge=purge, embargo=embargo)
    # A fold tested with the same combination in several splits is one backtest.
    tested: dict[tuple[int, str], Piece] = {}
    results: list[dict[int, Piece]] = []
    reports = []
    if progress is not None:
        progress(0, len(plan.splits))
    with study.executing():
        for i, split in enumerate(plan.splits):
            best = _choose(study, split.train, metric)
            results.append(_test(study, split, best.params, tested))
            reports.append(
                SplitReport(
                    index=i,
                    train=[study.report(b) for b in split.train],
                    params=best.params,
                    in_sample=in_sample(best, metric),
                    tests=[
                        FoldTest(fold=f, span=study.report(span), metrics=results[i][f].metrics)
                        for f, span in zip(split.test_folds, split.tests, strict=True)
                    ],
                )
            )
            if progress is not None:
                progress(i + 1, len(plan.splits))
    paths = [
        PathReport(
            index=p,
            splits=list(chosen),
            metrics=stitch(
                [results[s][f] for f, s in enumerate(chosen)], study.initial_cash, study.periods_per_year
            ).metrics,
        )
        for p, chosen in enumerate(plan.paths)
    ]
    return CpcvReport(
        strategy=study.cls.name,
        symbols=study.symbols,
        timeframe=study.timeframe.name,
        exchange=study.exchange,
        metric=metric,
        bars=study.bars,
        n_folds=n_folds,
        n_test_folds=n_test_folds,
        purge=purge,
        embargo=embargo,
        folds=[study.report(f) for f in plan.folds],
        splits=reports,
        paths=paths,
    )


def _test(
    study: Study, split: CpcvSplit, params: dict[str, Any], tested: dict[tuple[int, str], Piece]
) -> dict[int, Piece]:
    """Each test fold of the split backtested with `params` (from `tested` when already run)."""
    out = {}
    key = json.dumps(params, sort_keys=True, default=str)
    for fold, span in zip(split.test_folds, split.tests, strict=True):
        if (fold, key) not in tested:
            tested[fold, key] = Piece.of(study.backtest(params, span))
        out[fold] = tested[fold, key]
    return out
