"""The server's walk-forwards (and CPCV): checked when posted, run as jobs of the backtest worker pool, stored."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cracktrader.data.timeframes import parse_timeframe
from cracktrader.engine.metrics import METRIC_KEYS
from cracktrader.errors import CracktraderError, UserInputError
from cracktrader.runs import events, worker
from cracktrader.runs.backtest import resolve_range, validate_backtest
from cracktrader.runs.worker import JobOutcome
from cracktrader.settings import Settings
from cracktrader.strategies.registry import load_registry
from cracktrader.sweeps.grid import expand
from cracktrader.sweeps.request import ACTIVE_STATUSES, SweepProgress
from cracktrader.sweeps.runner import check_grid_size
from cracktrader.sweeps.walkforward_job import PROGRESS, WalkForwardJob, WalkForwardOutcome, run_walkforward_job
from cracktrader.sweeps.walkforward_request import WalkForwardDocument, WalkForwardRequest
from cracktrader.sweeps.windows import cpcv_plan, parse_length, walk_forward_windows

if TYPE_CHECKING:
    from cracktrader.db.walkforward_store import WalkForwardStore
    from cracktrader.runs.registry import RunRegistry

log = logging.getLogger(__name__)

CANCEL_WAIT_S = 2.0  # how long DELETE waits for a running walk-forward to end (after the sweep chunk in hand)
KEEP_ENDED = 50  # ended walk-forwards kept in memory (the store has them all)


class WalkForwardNotFoundError(CracktraderError):
    code = "NOT_FOUND"
    status_code = 404


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


@dataclass(slots=True)
class LiveWalkForward:
    """A walk-forward this server accepted: its request, owner and document as it progresses."""

    doc: WalkForwardDocument
    request: WalkForwardRequest
    user_id: int | None
    started_mono: float | None = None
    task: asyncio.Task[None] | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    started_write: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        return self.doc.status in ACTIVE_STATUSES


class WalkForwardRegistry:
    """Starts, cancels and reports the server's walk-forwards; each holds one worker of the runs' pool."""

    def __init__(self, *, runs: RunRegistry, store: WalkForwardStore, settings: Settings) -> None:
        self.runs = runs
        self.store = store
        self.settings = settings
        self.items: dict[str, LiveWalkForward] = {}

    @property
    def active(self) -> int:
        """Walk-forwards queued or running (they count against the backtests' limits)."""
        return sum(1 for w in self.items.values() if w.active)

    async def start(self) -> int:
        """Fail the walk-forwards gone servers left unfinished (after the runs' lease was taken)."""
        return await self.store.interrupt(ended_at=datetime.now(UTC))

    async def close(self) -> None:
        """Cancel this server's walk-forwards and wait (up to 5 s) for them to end."""
        for live in self.items.values():
            if live.active:
                self.runs.pool.stop(live.doc.walkforward_id)
        busy = {w.task for w in self.items.values() if w.task is not None and not w.task.done()}
        if busy:
            await asyncio.wait(busy, timeout=5)

    # Commands ------------------------------------------------------------------------------------------
    async def submit(self, request: WalkForwardRequest, *, user_id: int | None) -> WalkForwardDocument:
        """Check and accept a walk-forward; it waits its turn in the pool ("queued")."""
        checked = await asyncio.to_thread(check_request, request, self.settings)
        self.runs.admit_job()
        wf_id = uuid.uuid4().hex
        doc = WalkForwardDocument(
            walkforward_id=wf_id,
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
        live = LiveWalkForward(doc, request, user_id)
        self.items[wf_id] = live  # counted by admit_job from here on
        try:
            await self.store.create(doc, user_id=user_id, server_id=self.runs.server_id)
        except BaseException:
            self.items.pop(wf_id, None)
            raise
        self._forget_old()
        self._publish(live)
        live.task = asyncio.create_task(self._run(live), name=f"walkforward-{wf_id}")
        return doc.model_copy()

    async def cancel(self, wf_id: str, *, owner: int | None) -> WalkForwardDocument:
        """Cancel a queued or running walk-forward (it stops after the sweep chunk in hand); an ended one stays."""
        live = self.items.get(wf_id)
        if live is None or not live.active:
            return await self.get(wf_id, owner=owner)
        self._check_owner(live, owner)
        self.runs.pool.stop(wf_id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(live.ended.wait()), CANCEL_WAIT_S)
        return self._document(live)

    # Reading -------------------------------------------------------------------------------------------
    async def get(self, wf_id: str, *, owner: int | None) -> WalkForwardDocument:
        """A walk-forward's document with its report once completed (404 for another user's)."""
        live = self.items.get(wf_id)
        if live is not None:
            self._check_owner(live, owner)
            return self._document(live)
        stored = await self.store.get(wf_id)
        if stored is None or (owner is not None and stored[1] != owner):
            raise _not_found(wf_id)
        return stored[0]

    async def page(self, *, owner: int | None, limit: int, offset: int) -> tuple[list[WalkForwardDocument], int]:
        """A page of the caller's walk-forwards newest first, without reports (live ones with their progress)."""
        docs, total = await self.store.page(user_id=owner, limit=limit, offset=offset)
        items = [self._document(self.items[d.walkforward_id]) if d.walkforward_id in self.items else d for d in docs]
        return [d.model_copy(update={"report": None}) for d in items], total

    # Execution -----------------------------------------------------------------------------------------
    async def _run(self, live: LiveWalkForward) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def call(fn: Any, *args: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed under the job
                loop.call_soon_threadsafe(fn, *args)

        def resolve(outcome: Any) -> None:
            if not done.done():
                done.set_result(outcome)

        job = WalkForwardJob(live.doc.walkforward_id, live.request, self.settings)
        self.runs.pool.submit(
            job,
            lambda kind, payload: call(self._on_message, live, kind, payload),
            lambda outcome: call(resolve, outcome),
            target=run_walkforward_job,
        )
        try:
            outcome = await done
            if live.started_write is not None:  # its "running" must not land after the end
                await asyncio.gather(live.started_write, return_exceptions=True)
            await self._finish(live, outcome)
        finally:
            live.ended.set()

    def _on_message(self, live: LiveWalkForward, kind: str, payload: dict[str, Any]) -> None:
        doc = live.doc
        if not live.active:
            return
        if kind == worker.STARTED:
            doc.status, doc.started_at = "running", datetime.now(UTC)
            live.started_mono = time.monotonic()
            live.started_write = asyncio.create_task(self._mark_running(doc.walkforward_id, doc.started_at))
            self._publish(live)
        elif kind == PROGRESS:
            # Windows are seconds each: every one is published (no throttle needed).
            doc.progress.done, doc.progress.total = payload["done"], payload["total"]
            self._publish(live)

    async def _mark_running(self, wf_id: str, started_at: datetime) -> None:
        try:
            await self.store.mark_running(wf_id, started_at=started_at)
        except Exception:
            log.warning("Could not record walk-forward %s as running", wf_id, exc_info=True)

    async def _finish(self, live: LiveWalkForward, outcome: Any) -> None:
        """Save how it ended, then announce it: a client that sees it ended can read its report."""
        doc = live.doc.model_copy(deep=True)  # applied once saved: until then it reads as running
        if isinstance(outcome, WalkForwardOutcome):
            doc.status = outcome.status  # type: ignore[assignment]
            doc.error, doc.error_code = outcome.error, outcome.error_code
            if outcome.report is not None:
                doc = WalkForwardDocument.model_validate({**doc.model_dump(), "report": outcome.report})
        else:  # a JobOutcome: stopped while it waited, or its worker died
            assert isinstance(outcome, JobOutcome)
            doc.status = "cancelled" if outcome.status == "stopped" else "failed"
            doc.error, doc.error_code = outcome.error, outcome.error_code
        doc.ended_at = datetime.now(UTC)
        if doc.status == "completed":
            doc.progress.done = doc.progress.total
        try:
            await self.store.finish(doc)
        except Exception:
            log.exception("Could not save walk-forward %s", doc.walkforward_id)
            doc.status, doc.error, doc.error_code = "failed", "Could not save the report", "INTERNAL_ERROR"
            doc.report = None
        live.doc = doc
        self._publish(live)

    def _document(self, live: LiveWalkForward) -> WalkForwardDocument:
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

    def _publish(self, live: LiveWalkForward) -> None:
        doc = self._document(live)
        payload = {"walkforward_id": doc.walkforward_id, "kind": doc.kind, "status": doc.status}
        payload.update(doc.progress.model_dump())
        self.runs.bus.publish(events.Event(events.WALKFORWARD_PROGRESS, payload, user_id=live.user_id))

    def _check_owner(self, live: LiveWalkForward, owner: int | None) -> None:
        if owner is not None and live.user_id != owner:
            raise _not_found(live.doc.walkforward_id)

    def _forget_old(self) -> None:
        ended = [w for w in self.items.values() if not w.active and w.ended.is_set()]
        for live in ended[: max(0, len(ended) - KEEP_ENDED)]:
            self.items.pop(live.doc.walkforward_id, None)


def _not_found(wf_id: str) -> WalkForwardNotFoundError:
    return WalkForwardNotFoundError(f"No walk-forward with id {wf_id!r}", details={"walkforward_id": wf_id})
