"""What the server's sweeps and walk-forwards share: jobs of the runs' worker pool, owned, stored and streamed.

A registry accepts a checked request, stores its document ("queued"), hands the job to the pool, follows the
worker's messages (started, progress) into the document and the event stream, and saves how it ended. The
subclasses say what their job is, what its progress event looks like and how its outcome is saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from cracktrader.errors import CracktraderError
from cracktrader.runs import events, worker
from cracktrader.runs.worker import JobOutcome
from cracktrader.settings import Settings
from cracktrader.sweeps.request import ACTIVE_STATUSES, SweepProgress

if TYPE_CHECKING:
    from cracktrader.runs.pool import PoolJob
    from cracktrader.runs.registry import RunRegistry

log = logging.getLogger(__name__)

# How long DELETE waits for a running job to end (its worker stops after the chunk in hand).
CANCEL_WAIT_S = 2.0
# Ended jobs kept in memory (the store has them all).
KEEP_ENDED = 50


class JobDocument(Protocol):
    """The fields of a job's document that the registry reads and writes."""

    status: Any
    progress: SweepProgress
    started_at: datetime | None
    ended_at: datetime | None
    error: str | None
    error_code: str | None

    def model_copy(self, *, deep: bool = ...) -> Any: ...


class JobStore(Protocol):
    """What a registry needs of its table."""

    async def create(self, doc: Any, *, user_id: int | None, server_id: str) -> None: ...
    async def get(self, job_id: str) -> tuple[Any, int | None] | None: ...
    async def page(self, *, user_id: int | None, limit: int, offset: int) -> tuple[list[Any], int]: ...
    async def mark_running(self, job_id: str, *, started_at: datetime) -> None: ...
    async def interrupt(self, *, ended_at: datetime) -> int: ...


class JobNotFoundError(CracktraderError):
    code = "NOT_FOUND"
    status_code = 404


D = TypeVar("D", bound=JobDocument)
R = TypeVar("R")
Target = Callable[[Any, int], Any]


@dataclass(slots=True)
class LiveJob(Generic[D, R]):
    """A job this server accepted: its request, owner and document as it progresses."""

    doc: D
    request: R
    user_id: int | None
    started_mono: float | None = None
    task: asyncio.Task[None] | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    last_publish: float = 0.0
    started_write: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        return self.doc.status in ACTIVE_STATUSES


class PoolJobRegistry(Generic[D, R]):
    """Starts, cancels and reports one kind of job; each holds one worker of the runs' pool while it runs."""

    noun: ClassVar[str]  # "sweep", "walk-forward": in messages and logs
    id_field: ClassVar[str]  # the document's id field, as the API names it

    def __init__(self, *, runs: RunRegistry, store: JobStore, settings: Settings, throttle_s: float = 0.0) -> None:
        self.runs = runs
        self.store = store
        self.settings = settings
        self.throttle_s = throttle_s  # progress events at most this often (the first and last always go out)
        self.items: dict[str, LiveJob[D, R]] = {}

    # What a kind of job says ------------------------------------------------------------------------------
    def job(self, live: LiveJob[D, R]) -> tuple[PoolJob, Target]:
        """The pool job of `live` and the function a worker runs it with."""
        raise NotImplementedError

    def on_progress(self, doc: D, payload: dict[str, Any]) -> None:
        """Apply a worker's progress message to the document."""
        doc.progress.done, doc.progress.total = payload["done"], payload["total"]

    def event(self, doc: D, user_id: int | None) -> events.Event:
        """The stream event that carries the document's progress, for its owner."""
        raise NotImplementedError

    async def save(self, doc: D, outcome: Any) -> D:
        """Fill in and store the document of an ended job from its worker's outcome; the document to serve."""
        raise NotImplementedError

    def job_id(self, doc: D) -> str:
        return str(getattr(doc, self.id_field))

    # Lifecycle --------------------------------------------------------------------------------------------
    @property
    def active(self) -> int:
        """Jobs queued or running (they count against the backtests' limits)."""
        return sum(1 for live in self.items.values() if live.active)

    async def start(self) -> int:
        """Fail the jobs gone servers left unfinished (after the runs' lease was taken: it knows who is gone)."""
        return await self.store.interrupt(ended_at=datetime.now(UTC))

    async def close(self) -> None:
        """Cancel this server's jobs and wait (up to 5 s) for them to save what they have."""
        for live in self.items.values():
            if live.active:
                self.runs.pool.stop(self.job_id(live.doc))
        busy = {live.task for live in self.items.values() if live.task is not None and not live.task.done()}
        if busy:
            await asyncio.wait(busy, timeout=5)

    async def accept(self, doc: D, request: R, *, user_id: int | None) -> D:
        """Store a checked job's document ("queued") and hand the job to the pool."""
        live: LiveJob[D, R] = LiveJob(doc, request, user_id)
        job_id = self.job_id(doc)
        self.items[job_id] = live  # counted by admit_job from here on
        try:
            await self.store.create(doc, user_id=user_id, server_id=self.runs.server_id)
        except BaseException:
            self.items.pop(job_id, None)
            raise
        self._forget_old()
        self._publish(live, force=True)
        live.task = asyncio.create_task(self._run(live), name=f"{self.noun}-{job_id}")
        return doc.model_copy()

    async def cancel(self, job_id: str, *, owner: int | None) -> D:
        """Cancel a queued or running job (it stops after the chunk in hand); an ended one is left as it is."""
        live = self.items.get(job_id)
        if live is None or not live.active:
            return await self.get(job_id, owner=owner)
        self._check_owner(live, owner)
        self.runs.pool.stop(job_id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(live.ended.wait()), CANCEL_WAIT_S)
        return self._document(live)

    # Reading ----------------------------------------------------------------------------------------------
    async def get(self, job_id: str, *, owner: int | None) -> D:
        """A job's document (404 for another user's, `owner` None: everyone's)."""
        live = self.items.get(job_id)
        if live is not None:
            self._check_owner(live, owner)
            return self._document(live)
        stored = await self.store.get(job_id)
        if stored is None or (owner is not None and stored[1] != owner):
            raise self.not_found(job_id)
        doc: D = stored[0]
        return doc

    async def page(self, *, owner: int | None, limit: int, offset: int) -> tuple[list[D], int]:
        """A page of the caller's jobs newest first (live ones with their current progress)."""
        docs, total = await self.store.page(user_id=owner, limit=limit, offset=offset)
        items = self.items
        return [self._document(items[self.job_id(d)]) if self.job_id(d) in items else d for d in docs], total

    def not_found(self, job_id: str) -> JobNotFoundError:
        return JobNotFoundError(f"No {self.noun} with id {job_id!r}", details={self.id_field: job_id})

    # Execution --------------------------------------------------------------------------------------------
    async def _run(self, live: LiveJob[D, R]) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def call(fn: Any, *args: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed under the job
                loop.call_soon_threadsafe(fn, *args)

        def resolve(outcome: Any) -> None:
            if not done.done():
                done.set_result(outcome)

        job, target = self.job(live)
        self.runs.pool.submit(
            job,
            lambda kind, payload: call(self._on_message, live, kind, payload),
            lambda outcome: call(resolve, outcome),
            target=target,
        )
        try:
            outcome = await done
            if live.started_write is not None:  # its "running" must not land after the end
                await asyncio.gather(live.started_write, return_exceptions=True)
            await self._finish(live, outcome)
        finally:
            live.ended.set()

    def _on_message(self, live: LiveJob[D, R], kind: str, payload: dict[str, Any]) -> None:
        doc = live.doc
        if not live.active:
            return
        if kind == worker.STARTED:
            job_id = self.job_id(doc)
            log.info("%s %s started", self.noun.capitalize(), job_id)
            doc.status, doc.started_at = "running", datetime.now(UTC)
            live.started_mono = time.monotonic()
            live.started_write = asyncio.create_task(self._mark_running(job_id, doc.started_at))
            self._publish(live, force=True)
        elif kind == self.progress_kind:
            self.on_progress(doc, payload)
            self._publish(live)

    progress_kind: ClassVar[str]  # the worker's progress message kind

    async def _mark_running(self, job_id: str, started_at: datetime) -> None:
        try:
            await self.store.mark_running(job_id, started_at=started_at)
        except Exception:
            log.warning("Could not record %s %s as running", self.noun, job_id, exc_info=True)

    async def _finish(self, live: LiveJob[D, R], outcome: Any) -> None:
        """Save how it ended, then announce it: a client that sees it ended can read what it found."""
        doc = live.doc.model_copy(deep=True)  # applied once saved: until then it reads as running
        if isinstance(outcome, JobOutcome):  # stopped while it waited, or its worker died
            doc.status = "cancelled" if outcome.status == "stopped" else "failed"
            doc.error, doc.error_code = outcome.error, outcome.error_code
        doc.ended_at = datetime.now(UTC)
        live.doc = await self.save(doc, outcome)
        if live.doc.status == "failed":
            log.warning("%s %s failed: %s", self.noun.capitalize(), self.job_id(live.doc), live.doc.error)
        else:
            log.info("%s %s %s", self.noun.capitalize(), self.job_id(live.doc), live.doc.status)
        self._publish(live, force=True)

    def _document(self, live: LiveJob[D, R]) -> D:
        """The document with the progress fraction and ETA of now."""
        doc: D = live.doc.model_copy(deep=True)
        p = doc.progress
        p.fraction = p.done / p.total if p.total else (1.0 if not live.active else 0.0)
        if doc.status == "running" and live.started_mono is not None and 0 < p.done < p.total:
            elapsed = time.monotonic() - live.started_mono
            p.eta_seconds = round(elapsed / p.done * (p.total - p.done), 3)
        else:
            p.eta_seconds = None
        return doc

    def _publish(self, live: LiveJob[D, R], *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - live.last_publish < self.throttle_s:
            return
        live.last_publish = now
        self.runs.bus.publish(self.event(self._document(live), live.user_id))

    def _check_owner(self, live: LiveJob[D, R], owner: int | None) -> None:
        if owner is not None and live.user_id != owner:
            raise self.not_found(self.job_id(live.doc))

    def _forget_old(self) -> None:
        ended = [live for live in self.items.values() if not live.active and live.ended.is_set()]
        for live in ended[: max(0, len(ended) - KEEP_ENDED)]:
            self.items.pop(self.job_id(live.doc), None)
