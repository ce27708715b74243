"""A walk-forward (or CPCV) as a job of the server's worker pool: it runs in a worker, reports windows done."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cracktrader.errors import CracktraderError
from cracktrader.runs import worker
from cracktrader.settings import Settings
from cracktrader.strategies.registry import load_registry
from cracktrader.sweeps.cpcv import CpcvReport, cpcv
from cracktrader.sweeps.job import STOP_POLL_S
from cracktrader.sweeps.oos import StudyCancelledError
from cracktrader.sweeps.walkforward import WalkForwardReport, walk_forward
from cracktrader.sweeps.walkforward_request import WalkForwardRequest

log = logging.getLogger(__name__)

PROGRESS = "walkforward_progress"


@dataclass(frozen=True, slots=True)
class WalkForwardJob:
    """One walk-forward for a worker (`run_id`: its id, as the pool addresses jobs)."""

    run_id: str
    request: WalkForwardRequest
    settings: Settings


@dataclass(slots=True)
class WalkForwardOutcome:
    """What a walk-forward's worker hands back: its report, or why there is none."""

    status: str  # completed, cancelled or failed
    report: dict[str, Any] | None = None  # the report as JSON (what the store keeps)
    error: str | None = None
    error_code: str | None = None


def run_request(
    request: WalkForwardRequest,
    settings: Settings,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    workers: int | None = None,
) -> WalkForwardReport | CpcvReport:
    """Run the request's walk-forward or CPCV in this process (what the worker runs, and what the SDK's equals)."""
    cls = load_registry(settings).get(request.strategy_class or request.strategy_name)
    args = (cls, request.sweep_grid(), request.symbols, request.timeframe, request.start_date, request.end_date)
    common: dict[str, Any] = {
        "metric": request.metric,
        "params": request.strategy_params,
        "workers": workers,
        # Its sweeps on the server's Dask cluster when it names one, as a sweep's (the request never can).
        "executor": settings.dask_scheduler,
        "progress": progress,
        "cancel": cancel,
        "settings": settings,
        "purge": request.purge,
        **request.options(),
    }
    if request.cpcv is not None:
        return cpcv(
            *args,
            request.exchange,
            n_folds=request.cpcv.n_folds,
            n_test_folds=request.cpcv.n_test_folds,
            embargo=request.embargo,
            **common,
        )
    assert request.train is not None and request.test is not None  # the request's validator requires them
    return walk_forward(
        *args,
        request.exchange,
        train=request.train,
        test=request.test,
        step=request.step,
        anchored=request.anchored,
        partial_last=request.partial_last,
        **common,
    )


def run_walkforward_job(job: WalkForwardJob, slot: int) -> WalkForwardOutcome:
    """Run one walk-forward in this worker; a cancel ends it after the sweep chunk (or test backtest) in hand."""
    cancel = threading.Event()
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(STOP_POLL_S):
            if worker.stop_requested(slot):
                cancel.set()
                return

    def progress(done: int, total: int) -> None:
        worker.send(PROGRESS, job.run_id, {"done": done, "total": total})

    threading.Thread(target=watch, name="cracktrader-walkforward-stop", daemon=True).start()
    worker.send(worker.STARTED, job.run_id, {})
    try:
        report = run_request(job.request, job.settings, progress=progress, cancel=cancel, workers=1)
        return WalkForwardOutcome("completed", report.model_dump(mode="json"))
    except StudyCancelledError:
        return WalkForwardOutcome("cancelled")
    except CracktraderError as exc:
        return WalkForwardOutcome("failed", error=exc.message, error_code=exc.code)
    except Exception as exc:
        log.exception("Walk-forward %s failed", job.run_id)
        return WalkForwardOutcome("failed", error=f"Internal error: {type(exc).__name__}", error_code="INTERNAL_ERROR")
    finally:
        finished.set()
        worker.send(worker.END, job.run_id, {})
