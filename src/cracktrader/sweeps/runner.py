"""The server's sweeps: checked when posted, run as jobs of the backtest worker pool, stored when they end."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cracktrader.errors import CracktraderError, UserInputError
from cracktrader.runs import events
from cracktrader.runs.backtest import validate_backtest
from cracktrader.settings import Settings
from cracktrader.strategies.registry import load_registry
from cracktrader.sweeps.grid import Skipped, expand, grid_size
from cracktrader.sweeps.job import PROGRESS, SweepJob, SweepOutcome, run_sweep_job
from cracktrader.sweeps.plans import SweepRow
from cracktrader.sweeps.pool_jobs import JobNotFoundError, LiveJob, PoolJobRegistry, Target
from cracktrader.sweeps.request import (
    ACTIVE_STATUSES,
    MAX_SKIPPED_KEPT,
    SkippedOut,
    SweepDocument,
    SweepProgress,
    SweepRequest,
    SweepResultsPage,
    SweepRowOut,
)
from cracktrader.sweeps.sweep import best_first, check_metrics

if TYPE_CHECKING:
    from cracktrader.db.sweep_store import SweepStore
    from cracktrader.runs.pool import PoolJob
    from cracktrader.runs.registry import RunRegistry

log = logging.getLogger(__name__)


class SweepTooLargeError(UserInputError):
    """A grid with more combinations than the server runs."""

    code = "SWEEP_TOO_LARGE"
    status_code = 422


class RowNotFoundError(CracktraderError):
    code = "NOT_FOUND"
    status_code = 404


@dataclass(frozen=True, slots=True)
class CheckedSweep:
    """What checking a request found: the grid's size and the combinations the schema rejects."""

    combinations: int
    skipped: list[Skipped]


def check_grid_size(grid: dict[str, Any], settings: Settings) -> int:
    """The grid's number of combinations, refused over the server's limit (422 SWEEP_TOO_LARGE)."""
    size = grid_size(grid)
    limit = settings.max_sweep_combinations
    if size > limit:
        raise SweepTooLargeError(
            f"The grid has {size:,} combinations; this server runs at most {limit:,} "
            "(CRACKTRADER_MAX_SWEEP_COMBINATIONS)",
            details={"combinations": size, "max_combinations": limit},
        )
    return size


def check_request(request: SweepRequest, settings: Settings) -> CheckedSweep:
    """Refuse what a sweep request gets wrong before it is accepted: metrics, grid, size, strategy, data."""
    check_metrics(request.metrics, request.sort)
    grid = request.sweep_grid()
    check_grid_size(grid, settings)
    cls = load_registry(settings).get(request.strategy_class or request.strategy_name)
    expanded = expand(cls, grid, request.strategy_params)
    if expanded.valid:
        first = request.backtest_config(expanded.valid[0][0].params)
        validate_backtest(first.model_copy(update={"strategy_class": request.strategy_class}), settings=settings)
    return CheckedSweep(expanded.total, expanded.skipped)


def ranked(rows: list[SweepRow], sort: str, offset: int = 0) -> list[SweepRowOut]:
    """Rows best first by `sort` (ties in grid order), ranked from `offset + 1`."""
    return [
        SweepRowOut(rank=offset + i + 1, index=r.index, params=r.params, metrics=r.metrics)
        for i, r in enumerate(best_first(rows, sort))
    ]


async def stored_row(
    store: SweepStore, sweep_id: str, rank: int, *, owner: int | None = None
) -> tuple[SweepRequest, SweepRowOut]:
    """A stored sweep's request and its row of `rank` (404 for another user's, or when there is no such row)."""
    stored = await store.get(sweep_id)
    if stored is None or (owner is not None and stored[1] != owner):
        raise JobNotFoundError(f"No sweep with id {sweep_id!r}", details={"sweep_id": sweep_id})
    doc = stored[0]
    row = await store.row(sweep_id, rank)
    if row is None:
        raise RowNotFoundError(
            f"Sweep {sweep_id} has no row of rank {rank} (it has {doc.rows}; status {doc.status})",
            details={"sweep_id": sweep_id, "rank": rank, "rows": doc.rows, "status": doc.status},
        )
    return SweepRequest.model_validate(doc.request), row


class SweepRegistry(PoolJobRegistry[SweepDocument, SweepRequest]):
    """Starts, cancels and reports the server's sweeps; each holds one worker of the runs' pool while it runs."""

    noun = "sweep"
    id_field = "sweep_id"
    kind = "sweep"
    request_type = SweepRequest
    progress_kind = PROGRESS
    store: SweepStore

    def __init__(self, *, runs: RunRegistry, store: SweepStore, settings: Settings, throttle_s: float = 0.25) -> None:
        super().__init__(runs=runs, store=store, settings=settings, throttle_s=throttle_s)

    async def submit(self, request: SweepRequest, *, user_id: int | None) -> SweepDocument:
        """Check and accept a sweep; it waits its turn in the pool ("queued")."""
        checked = await asyncio.to_thread(check_request, request, self.settings)
        self.admit()
        valid = checked.combinations - len(checked.skipped)
        doc = SweepDocument(
            sweep_id=uuid.uuid4().hex,
            status="queued",
            strategy_name=request.strategy_name,
            progress=SweepProgress(done=0, total=valid, fraction=0.0 if valid else 1.0, eta_seconds=None),
            combinations=checked.combinations,
            evaluated=0,
            skipped_count=len(checked.skipped),
            skipped=[_skipped(s) for s in checked.skipped[:MAX_SKIPPED_KEPT]],
            rows=0,
            sort=request.sort,
            metrics=list(request.metrics),
            top_k=request.top_k,
            created_at=datetime.now(UTC),
            started_at=None,
            ended_at=None,
            error=None,
            error_code=None,
            request=request.model_dump(mode="json"),
        )
        return await self.accept(doc, request, user_id=user_id)

    async def results(
        self, sweep_id: str, *, owner: int | None, sort: str | None, limit: int, offset: int
    ) -> SweepResultsPage:
        """A page of rows best first by `sort` (the sweep's own by default); none until the sweep ended."""
        doc = await self.get(sweep_id, owner=owner)
        by = sort or doc.sort
        if by not in doc.metrics:
            raise UserInputError(
                f"sort {by!r} is not a metric this sweep kept; kept: {', '.join(doc.metrics)}",
                details={"sort": by, "metrics": doc.metrics},
            )
        if doc.status in ACTIVE_STATUSES:
            items: list[SweepRowOut] = []
        elif by == doc.sort:
            items = await self.store.ranked(sweep_id, limit=limit, offset=offset)
        else:
            rows = await self.store.all_rows(sweep_id)
            every = ranked([SweepRow(r.index, r.params, dict(r.metrics)) for r in rows], by)
            items = every[offset : offset + limit]
        return SweepResultsPage(
            sweep_id=sweep_id, status=doc.status, sort=by, items=items, total=doc.rows, limit=limit, offset=offset
        )

    async def row(self, sweep_id: str, rank: int, *, owner: int | None) -> tuple[SweepRequest, SweepRowOut]:
        """The request of a sweep and its row of `rank` by the sweep's sort (404 when there is none)."""
        live = self.items.get(sweep_id)
        if live is not None:
            self._check_owner(live, owner)
        return await stored_row(self.store, sweep_id, rank, owner=owner)

    # The job ---------------------------------------------------------------------------------------------
    def job(self, live: LiveJob[SweepDocument, SweepRequest]) -> tuple[PoolJob, Target]:
        return SweepJob(live.doc.sweep_id, live.request, self.settings), run_sweep_job

    def on_progress(self, doc: SweepDocument, payload: dict[str, Any]) -> None:
        doc.progress.done, doc.progress.total = payload["done"], payload["total"]
        doc.evaluated = payload["done"]

    def event(self, doc: SweepDocument, user_id: int | None) -> events.Event:
        payload = {"sweep_id": doc.sweep_id, "status": doc.status, **doc.progress.model_dump(), "rows": doc.rows}
        return events.Event(events.SWEEP_PROGRESS, payload, user_id=user_id)

    async def save(self, doc: SweepDocument, outcome: Any) -> SweepDocument:
        """Save the rows (best first: the worker ranked them, not this event loop) and the document."""
        rows: list[SweepRow] = []
        if isinstance(outcome, SweepOutcome):
            doc.status = outcome.status  # type: ignore[assignment]
            doc.error, doc.error_code = outcome.error, outcome.error_code
            if outcome.status != "failed":
                doc.evaluated = outcome.evaluated
                rows = outcome.rows
        doc.rows = len(rows)
        doc.progress.done = doc.progress.total if doc.status == "completed" else doc.evaluated
        try:
            if not await self.store.finish(doc, rows):
                return await self.ended_elsewhere(doc)
        except Exception:
            log.exception("Could not save sweep %s", doc.sweep_id)
            doc.status, doc.error, doc.error_code = "failed", "Could not save the sweep's rows", "INTERNAL_ERROR"
            doc.rows = 0
        return doc


def _skipped(s: Skipped) -> SkippedOut:
    return SkippedOut(index=s.index, params=s.params, reason=s.reason[:500])
