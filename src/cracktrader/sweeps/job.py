"""A sweep as a job of the server's worker pool: it runs in a worker process, reports progress, honours stop."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from cracktrader.errors import CracktraderError
from cracktrader.runs import worker
from cracktrader.settings import Settings
from cracktrader.strategies.registry import load_registry
from cracktrader.sweeps.grid import Skipped
from cracktrader.sweeps.plans import SweepRow
from cracktrader.sweeps.request import SweepRequest
from cracktrader.sweeps.sweep import best_first, sweep

log = logging.getLogger(__name__)

PROGRESS = "sweep_progress"
# How often the worker looks at its stop flag: a cancel ends the sweep after the chunk in hand.
STOP_POLL_S = 0.05
# Combinations per chunk of the compiled kernels: milliseconds each, and they share indicator windows in a chunk.
KERNEL_CHUNK = 16
# The Python engine (event-driven strategies, exchange rules) takes a whole backtest per combination: one per chunk,
# so a cancel lands after the combination in hand.
ENGINE_CHUNK = 1
PROGRESS_EVERY_S = 0.25


@dataclass(frozen=True, slots=True)
class SweepJob:
    """One sweep for a worker (`run_id`: the sweep's id, as the pool addresses jobs)."""

    run_id: str
    request: SweepRequest
    settings: Settings


@dataclass(slots=True)
class SweepOutcome:
    """What a sweep's worker hands back: its rows (partial when cancelled) or why there are none."""

    status: str  # completed, cancelled or failed
    rows: list[SweepRow] = field(default_factory=list)  # best first by the request's sort, metrics JSON-safe
    skipped: list[Skipped] = field(default_factory=list)
    combinations: int = 0
    evaluated: int = 0
    error: str | None = None
    error_code: str | None = None


def run_sweep_job(job: SweepJob, slot: int) -> SweepOutcome:
    """Run one sweep in this worker, in this process (the job holds one worker, as a backtest does)."""
    cancel = threading.Event()
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(STOP_POLL_S):
            if worker.stop_requested(slot):
                cancel.set()
                return

    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done in (0, total) or now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            worker.send(PROGRESS, job.run_id, {"done": done, "total": total})

    threading.Thread(target=watch, name="cracktrader-sweep-stop", daemon=True).start()
    worker.send(worker.STARTED, job.run_id, {})
    req = job.request
    try:
        cls = load_registry(job.settings).get(req.strategy_class or req.strategy_name)
        engine = cls.style() != "vectorized" or req.exchange_rules
        result = sweep(
            cls,
            req.sweep_grid(),
            req.symbols,
            req.timeframe,
            req.start_date,
            req.end_date,
            req.exchange,
            metrics=req.metrics,
            top_k=req.top_k,
            params=req.strategy_params,
            sort=req.sort,
            # On the server's Dask cluster when it names one; the request never can (SweepRequest has no field).
            executor=job.settings.dask_scheduler,
            workers=1,
            chunk_size=None if job.settings.dask_scheduler else ENGINE_CHUNK if engine else KERNEL_CHUNK,
            progress=progress,
            cancel=cancel,
            settings=job.settings,
            initial_cash=req.initial_cash,
            commission=req.commission,
            slippage_bps=req.slippage_bps,
            latency_bars=req.latency_bars,
            allow_short=req.allow_short,
            exchange_rules=req.exchange_rules,
        )
        status = "cancelled" if result.cancelled else "completed"
        # Ranked here, in the worker: ranking 10,000 rows on the server held its event loop for 100-150 ms.
        rows = best_first(result.rows, req.sort)
        return SweepOutcome(status, rows, result.skipped, result.total, result.evaluated)
    except CracktraderError as exc:
        return SweepOutcome("failed", error=exc.message, error_code=exc.code)
    except Exception as exc:
        log.exception("Sweep %s failed", job.run_id)
        return SweepOutcome("failed", error=f"Internal error: {type(exc).__name__}", error_code="INTERNAL_ERROR")
    finally:
        finished.set()
        worker.send(worker.END, job.run_id, {})
