"""The server's walk-forwards (and CPCV): checked when posted, run as jobs of the backtest worker pool, stored."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cracktrader.data.timeframes import parse_timeframe
from cracktrader.engine.metrics import METRIC_KEYS
from cracktrader.errors import UserInputError
from cracktrader.runs import events
from cracktrader.runs.backtest import resolve_range, validate_backtest
from cracktrader.settings import Settings
from cracktrader.strategies.registry import load_registry
from cracktrader.sweeps.grid import expand
from cracktrader.sweeps.pool_jobs import LiveJob, PoolJobRegistry, Target
from cracktrader.sweeps.request import SweepProgress
from cracktrader.sweeps.runner import check_grid_size
from cracktrader.sweeps.walkforward_job import PROGRESS, WalkForwardJob, WalkForwardOutcome, run_walkforward_job
from cracktrader.sweeps.walkforward_request import WalkForwardDocument, WalkForwardRequest
from cracktrader.sweeps.windows import cpcv_plan, parse_length, walk_forward_windows

if TYPE_CHECKING:
    from cracktrader.db.walkforward_store import WalkForwardStore
    from cracktrader.runs.pool import PoolJob
    from cracktrader.runs.registry import RunRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CheckedWalkForward:
    """What checking a request found: the grid's size and the windows (CPCV: splits) the range makes."""

    combinations: int
    windows: int


def check_request(request: WalkForwardRequest, settings: Settings) -> CheckedWalkForward:
    """Refuse what a request gets wrong before it is accepted: metric, grid, size, strategy, data and windows.

    Windows are counted on the range's nominal bars (the data is not loaded here); a range with gaps may make
    fewer, which the walk-forward itself then reports.
    """
    if request.metric not in METRIC_KEYS:
        raise UserInputError(
            f"unknown metric {request.metric!r}; available: {', '.join(METRIC_KEYS)}",
            details={"metric": request.metric, "available": list(METRIC_KEYS)},
        )
    grid = request.sweep_grid()
    size = check_grid_size(grid, settings)
    cls = load_registry(settings).get(request.strategy_class or request.strategy_name)
    expanded = expand(cls, grid, request.strategy_params)
    if not expanded.valid:
        skipped = expanded.skipped[0] if expanded.skipped else None
        raise UserInputError(
            "the strategy rejects every combination of the grid"
            + (f", e.g. {skipped.params}: {skipped.reason}" if skipped else ""),
            details={"skipped": len(expanded.skipped)},
        )
    config = request.backtest_config(expanded.valid[0][0].params)
    first = config.model_copy(update={"strategy_class": request.strategy_class})
    validate_backtest(first, settings=settings)
    tf = parse_timeframe(request.timeframe)
    start, end = resolve_range(first, tf, settings)
    bars = math.ceil((end - start) / tf.ms)
    if request.cpcv is not None:
        plan = cpcv_plan(
            bars, request.cpcv.n_folds, request.cpcv.n_test_folds, purge=request.purge, embargo=request.embargo
        )
        return CheckedWalkForward(size, len(plan.splits))
    assert request.train is not None and request.test is not None  # the request's validator requires them
    train, test = parse_length(request.train, tf, "train"), parse_length(request.test, tf, "test")
    step = test if request.step is None else parse_length(request.step, tf, "step")
    windows = walk_forward_windows(
        bars, train, test, step, anchored=request.anchored, purge=request.purge, partial_last=request.partial_last
    )
    return CheckedWalkForward(size, len(windows))


class WalkForwardRegistry(PoolJobRegistry[WalkForwardDocument, WalkForwardRequest]):
    """Starts, cancels and reports the server's walk-forwards; each holds one worker of the runs' pool."""

    noun = "walk-forward"
    id_field = "walkforward_id"
    kind = "walkforward"
    request_type = WalkForwardRequest
    progress_kind = PROGRESS
    store: WalkForwardStore

    def __init__(self, *, runs: RunRegistry, store: WalkForwardStore, settings: Settings) -> None:
        # Windows take seconds each: every progress message is published (no throttle).
        super().__init__(runs=runs, store=store, settings=settings, throttle_s=0.0)

    async def submit(self, request: WalkForwardRequest, *, user_id: int | None) -> WalkForwardDocument:
        """Check and accept a walk-forward; it waits its turn in the pool ("queued")."""
        checked = await asyncio.to_thread(check_request, request, self.settings)
        self.admit()
        doc = WalkForwardDocument(
            walkforward_id=uuid.uuid4().hex,
            kind=request.kind,
            status="queued",
            strategy_name=request.strategy_name,
            progress=SweepProgress(done=0, total=checked.windows, fraction=0.0, eta_seconds=None),
            combinations=checked.combinations,
            created_at=datetime.now(UTC),
            started_at=None,
            ended_at=None,
            error=None,
            error_code=None,
            request=request.model_dump(mode="json"),
        )
        return await self.accept(doc, request, user_id=user_id)

    async def page(self, *, owner: int | None, limit: int, offset: int) -> tuple[list[WalkForwardDocument], int]:
        """A page of the caller's walk-forwards newest first, without reports (live ones with their progress)."""
        docs, total = await super().page(owner=owner, limit=limit, offset=offset)
        return [d.model_copy(update={"report": None}) for d in docs], total

    # The job ---------------------------------------------------------------------------------------------
    def job(self, live: LiveJob[WalkForwardDocument, WalkForwardRequest]) -> tuple[PoolJob, Target]:
        return WalkForwardJob(live.doc.walkforward_id, live.request, self.settings), run_walkforward_job

    def event(self, doc: WalkForwardDocument, user_id: int | None) -> events.Event:
        payload = {"walkforward_id": doc.walkforward_id, "kind": doc.kind, "status": doc.status}
        payload.update(doc.progress.model_dump())
        return events.Event(events.WALKFORWARD_PROGRESS, payload, user_id=user_id)

    async def save(self, doc: WalkForwardDocument, outcome: Any) -> WalkForwardDocument:
        """Save the report and the document."""
        if isinstance(outcome, WalkForwardOutcome):
            doc.status = outcome.status  # type: ignore[assignment]
            doc.error, doc.error_code = outcome.error, outcome.error_code
            if outcome.report is not None:
                doc = WalkForwardDocument.model_validate({**doc.model_dump(), "report": outcome.report})
        if doc.status == "completed":
            doc.progress.done = doc.progress.total
        try:
            if not await self.store.finish(doc):
                return await self.ended_elsewhere(doc)
        except Exception:
            log.exception("Could not save walk-forward %s", doc.walkforward_id)
            doc.status, doc.error, doc.error_code = "failed", "Could not save the report", "INTERNAL_ERROR"
            doc.report = None
        return doc
