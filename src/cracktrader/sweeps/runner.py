"""The server's sweeps: checked when posted, run as jobs of the backtest worker pool, stored when they end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cracktrader.errors import CracktraderError, UserInputError
from cracktrader.runs import events, worker
from cracktrader.runs.backtest import validate_backtest
from cracktrader.runs.worker import JobOutcome
from cracktrader.settings import Settings
from cracktrader.strategies.registry import load_registry
from cracktrader.sweeps.grid import Skipped, expand, grid_size
from cracktrader.sweeps.job import PROGRESS, SweepJob, SweepOutcome, run_sweep_job
from cracktrader.sweeps.plans import SweepRow
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
    from cracktrader.runs.registry import RunRegistry

log = logging.getLogger(__name__)

# How long DELETE waits for a running sweep to end (its worker stops after the chunk in hand).
CANCEL_WAIT_S = 2.0
# Ended sweeps kept in memory (the store has them all).
KEEP_ENDED = 50


class SweepTooLargeError(UserInputError):
    """A grid with more combinations than the server runs."""

    code = "SWEEP_TOO_LARGE"
    status_code = 422


class SweepNotFoundError(CracktraderError):
    code = "NOT_FOUND"
    status_code = 404


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
        raise _not_found(sweep_id)
    doc = stored[0]
    row = await store.row(sweep_id, rank)
    if row is None:
        raise RowNotFoundError(
            f"Sweep {sweep_id} has no row of rank {rank} (it has {doc.rows}; status {doc.status})",
            details={"sweep_id": sweep_id, "rank": rank, "rows": doc.rows, "status": doc.status},
        )
    return SweepRequest.model_validate(doc.request), row


@dataclass(slots=True)
class LiveSweep:
    """A sweep this server accepted: its request, owner and document as it progresses."""

    doc: SweepDocument
    request: SweepRequest
    user_id: int | None
    started_mono: float | None = None
    task: asyncio.Task[None] | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    last_publish: float = 0.0
    started_write: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        return self.doc.status in ACTIVE_STATUSES


class SweepRegistry:
    """Starts, cancels and reports the server's sweeps; each holds one worker of the runs' pool while it runs."""

    def __init__(self, *, runs: RunRegistry, store: SweepStore, settings: Settings, throttle_s: float = 0.25) -> None:
        self.runs = runs
        self.store = store
        self.settings = settings
        self.throttle_s = throttle_s
        self.sweeps: dict[str, LiveSweep] = {}

    @property
    def active(self) -> int:
        """Sweeps queued or running (they count against the backtests' limits)."""
        return sum(1 for s in self.sweeps.values() if s.active)

    async def start(self) -> int:
        """Fail the sweeps gone servers left unfinished (after the runs' lease was taken: it knows who is gone)."""
        return await self.store.interrupt(ended_at=datetime.now(UTC))

    async def close(self) -> None:
        """Cancel this server's sweeps and wait (up to 5 s) for them to save what they have."""
        for live in self.sweeps.values():
            if live.active:
                self.runs.pool.stop(live.doc.sweep_id)
        busy = {s.task for s in self.sweeps.values() if s.task is not None and not s.task.done()}
        if busy:
            await asyncio.wait(busy, timeout=5)

    # Commands ------------------------------------------------------------------------------------------
    async def submit(self, request: SweepRequest, *, user_id: int | None) -> SweepDocument:
        """Check and accept a sweep; it waits its turn in the pool ("queued")."""
        checked = await asyncio.to_thread(check_request, request, self.settings)
        self.runs.admit_job()
        sweep_id = uuid.uuid4().hex
        valid = checked.combinations - len(checked.skipped)
        doc = SweepDocument(
            sweep_id=sweep_id,
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
        live = LiveSweep(doc, request, user_id)
        self.sweeps[sweep_id] = live  # counted by admit_job from here on
        try:
            await self.store.create(doc, user_id=user_id, server_id=self.runs.server_id)
        except BaseException:
            self.sweeps.pop(sweep_id, None)
            raise
        self._forget_old()
        self._publish(live, force=True)
        live.task = asyncio.create_task(self._run(live), name=f"sweep-{sweep_id}")
        return doc.model_copy()

    async def cancel(self, sweep_id: str, *, owner: int | None) -> SweepDocument:
        """Cancel a queued or running sweep, keeping the rows evaluated so far; an ended one is left as it is."""
        live = self.sweeps.get(sweep_id)
        if live is None or not live.active:
            return await self.get(sweep_id, owner=owner)
        self._check_owner(live, owner)
        self.runs.pool.stop(sweep_id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(live.ended.wait()), CANCEL_WAIT_S)
        return self._document(live)

    # Reading -------------------------------------------------------------------------------------------
    async def get(self, sweep_id: str, *, owner: int | None) -> SweepDocument:
        """A sweep's document (404 for another user's, `owner` None: everyone's)."""
        live = self.sweeps.get(sweep_id)
        if live is not None:
            self._check_owner(live, owner)
            return self._document(live)
        stored = await self.store.get(sweep_id)
        if stored is None or (owner is not None and stored[1] != owner):
            raise _not_found(sweep_id)
        return stored[0]

    async def page(self, *, owner: int | None, limit: int, offset: int) -> tuple[list[SweepDocument], int]:
        """A page of the caller's sweeps newest first (live ones with their current progress)."""
        docs, total = await self.store.page(user_id=owner, limit=limit, offset=offset)
        return [self._document(self.sweeps[d.sweep_id]) if d.sweep_id in self.sweeps else d for d in docs], total

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
        live = self.sweeps.get(sweep_id)
        if live is not None:
            self._check_owner(live, owner)
        return await stored_row(self.store, sweep_id, rank, owner=owner)

    # Execution -----------------------------------------------------------------------------------------
    async def _run(self, live: LiveSweep) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def call(fn: Any, *args: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed under the sweep
                loop.call_soon_threadsafe(fn, *args)

        def resolve(outcome: Any) -> None:
            if not done.done():
                done.set_result(outcome)

        job = SweepJob(live.doc.sweep_id, live.request, self.settings)
        self.runs.pool.submit(
            job,
            lambda kind, payload: call(self._on_message, live, kind, payload),
            lambda outcome: call(resolve, outcome),
            target=run_sweep_job,
        )
        try:
            outcome = await done
            if live.started_write is not None:  # its "running" must not land after the end
                await asyncio.gather(live.started_write, return_exceptions=True)
            await self._finish(live, outcome)
        finally:
            live.ended.set()

    def _on_message(self, live: LiveSweep, kind: str, payload: dict[str, Any]) -> None:
        doc = live.doc
        if not live.active:
            return
        if kind == worker.STARTED:
            log.info("Sweep %s started", doc.sweep_id)
            doc.status, doc.started_at = "running", datetime.now(UTC)
            live.started_mono = time.monotonic()
            live.started_write = asyncio.create_task(self._mark_running(doc.sweep_id, doc.started_at))
            self._publish(live, force=True)
        elif kind == PROGRESS:
            doc.progress.done, doc.progress.total = payload["done"], payload["total"]
            doc.evaluated = payload["done"]
            self._publish(live)

    async def _mark_running(self, sweep_id: str, started_at: datetime) -> None:
        try:
            await self.store.mark_running(sweep_id, started_at=started_at)
        except Exception:
            log.warning("Could not record sweep %s as running", sweep_id, exc_info=True)

    async def _finish(self, live: LiveSweep, outcome: Any) -> None:
        """Rank and save the rows, then announce the end: a client that sees it ended can read the rows."""
        doc = live.doc.model_copy(deep=True)  # applied once saved: until then the sweep reads as running
        rows: list[SweepRow] = []
        if isinstance(outcome, SweepOutcome):
            doc.status = outcome.status  # type: ignore[assignment]
            doc.error, doc.error_code = outcome.error, outcome.error_code
            if outcome.status != "failed":
                doc.evaluated = outcome.evaluated
                rows = outcome.rows  # best first: the worker ranked them, not this event loop
        else:  # a JobOutcome: stopped while it waited, or its worker died
            assert isinstance(outcome, JobOutcome)
            doc.status = "cancelled" if outcome.status == "stopped" else "failed"
            doc.error, doc.error_code = outcome.error, outcome.error_code
        doc.ended_at = datetime.now(UTC)
        doc.rows = len(rows)
        doc.progress.done = doc.progress.total if doc.status == "completed" else doc.evaluated
        try:
            await self.store.finish(doc, rows)
        except Exception:
            log.exception("Could not save sweep %s", doc.sweep_id)
            doc.status, doc.error, doc.error_code = "failed", "Could not save the sweep's rows", "INTERNAL_ERROR"
            doc.rows = 0
        live.doc = doc
        if doc.status == "failed":
            log.warning("Sweep %s failed: %s", doc.sweep_id, doc.error)
        else:
            log.info("Sweep %s %s: %d rows", doc.sweep_id, doc.status, doc.rows)
        self._publish(live, force=True)

    def _document(self, live: LiveSweep) -> SweepDocument:
        """The document with the progress fraction and ETA of now."""
        doc = live.doc.model_copy(deep=True)
        p = doc.progress
        p.fraction = p.done / p.total if p.total else (1.0 if not live.active else 0.0)
        if doc.status == "running" and live.started_mono is not None and 0 < p.done < p.total:
            elapsed = time.monotonic() - live.started_mono
            p.eta_seconds = round(elapsed / p.done * (p.total - p.done), 3)
        else:
            p.eta_seconds = None
        return doc

    def _publish(self, live: LiveSweep, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - live.last_publish < self.throttle_s:
            return
        live.last_publish = now
        doc = self._document(live)
        payload = {"sweep_id": doc.sweep_id, "status": doc.status, **doc.progress.model_dump(), "rows": doc.rows}
        self.runs.bus.publish(events.Event(events.SWEEP_PROGRESS, payload, user_id=live.user_id))

    def _check_owner(self, live: LiveSweep, owner: int | None) -> None:
        if owner is not None and live.user_id != owner:
            raise _not_found(live.doc.sweep_id)

    def _forget_old(self) -> None:
        ended = [s for s in self.sweeps.values() if not s.active and s.ended.is_set()]
        for live in ended[: max(0, len(ended) - KEEP_ENDED)]:
            self.sweeps.pop(live.doc.sweep_id, None)


def _skipped(s: Skipped) -> SkippedOut:
    return SkippedOut(index=s.index, params=s.params, reason=s.reason[:500])


def _not_found(sweep_id: str) -> SweepNotFoundError:
    return SweepNotFoundError(f"No sweep with id {sweep_id!r}", details={"sweep_id": sweep_id})
