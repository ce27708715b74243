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
    from cracktrader.db.event_store import EventStore
    from cracktrader.db.run_queue import Claim, RunQueue
    from cracktrader.runs.commands import RunCommands
    from cracktrader.runs.event_relay import EventRelay
    from cracktrader.runs.executor import JobResult
    from cracktrader.runs.pool import PoolJob
    from cracktrader.runs.registry import RunRegistry

log = logging.getLogger(__name__)

# How long DELETE waits for a running job to end (its worker stops after the chunk in hand).
CANCEL_WAIT_S = 2.0
# Ended jobs kept in memory (the store has them all).
KEEP_ENDED = 50
# How long a job's end waits for its worker's last messages (they come by another path than its outcome).
END_WAIT_S = 5.0
# How long a cancel asked of the process that runs the job waits for its answer.
REMOTE_CANCEL_WAIT_S = CANCEL_WAIT_S + 3.0
# How often the process that accepted a job checks that it has not ended unheard (a lapsed lease failed it).
MIRROR_CHECK_S = 5.0
# How a job's end reads in the run queue.
QUEUE_RESULT: dict[str, JobResult] = {"completed": "completed", "cancelled": "stopped", "failed": "failed"}


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
    async def requeue(self, job_id: str) -> None: ...
    async def discard(self, job_id: str) -> None: ...


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
    worker_done: asyncio.Event = field(default_factory=asyncio.Event)  # its worker's last message arrived
    claimed: bool = False  # an executor took it from the run queue: its events name it as a run
    handed_back: bool = False  # its executor drained and gave it back to the queue: nothing of it is saved

    @property
    def active(self) -> bool:
        return self.doc.status in ACTIVE_STATUSES


@dataclass(slots=True)
class QueueLink:
    """How a registry runs its jobs through the run queue: any executor claims them, any process reads them."""

    queue: RunQueue
    relay: EventRelay | None = None  # the event log: the progress of jobs another process runs
    commands: RunCommands | None = None  # cancels reach the process that runs the job


class PoolJobRegistry(Generic[D, R]):
    """Starts, cancels and reports one kind of job; each holds one worker of the runs' pool while it runs."""

    noun: ClassVar[str]  # "sweep", "walk-forward": in messages and logs
    id_field: ClassVar[str]  # the document's id field, as the API names it
    kind: ClassVar[str]  # its kind in the run queue
    request_type: ClassVar[type[Any]]  # the request model (a claimed job's request is validated again)

    def __init__(self, *, runs: RunRegistry, store: JobStore, settings: Settings, throttle_s: float = 0.0) -> None:
        self.runs = runs
        self.store = store
        self.settings = settings
        self.throttle_s = throttle_s  # progress events at most this often (the first and last always go out)
        self.items: dict[str, LiveJob[D, R]] = {}
        self.link: QueueLink | None = None  # set when the server runs jobs through the run queue
        self._mirrors: dict[str, asyncio.Task[None]] = {}  # jobs accepted here, followed in the event log

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
        for mirror in list(self._mirrors.values()):
            mirror.cancel()
        # A job claimed from the run queue is its executor's to drain (finish, or hand back to the queue).
        mine = [live for live in self.items.values() if not live.claimed]
        for live in mine:
            if live.active:
                self.runs.pool.stop(self.job_id(live.doc))
        # Every task, a handed-back job's too: it still records that it went back to the queue.
        busy = {live.task for live in self.items.values() if live.task is not None and not live.task.done()}
        if busy:
            await asyncio.wait(busy, timeout=5)

    async def ended_elsewhere(self, doc: D) -> D:
        """The stored document of a job that ended before this attempt could save it (its lease lapsed)."""
        stored = await self.store.get(self.job_id(doc))
        return doc if stored is None else stored[0]

    def admit(self) -> None:
        """Refuse a job this process has no room for (409 QUEUE_FULL); through the run queue, the queue's limits
        apply instead (per user when queued, global when claimed)."""
        if self.link is None:
            self.runs.admit_job()

    async def accept(self, doc: D, request: R, *, user_id: int | None) -> D:
        """Store a checked job's document ("queued") and hand the job to the pool."""
        if self.link is not None:
            return await self._enqueue(self.link.queue, doc, request, user_id=user_id)
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
        if live is None and self.link is not None:
            return await self._cancel_elsewhere(self.link, job_id, owner=owner)
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
        return await self._stored_document(stored[0])

    async def page(self, *, owner: int | None, limit: int, offset: int) -> tuple[list[D], int]:
        """A page of the caller's jobs newest first (live ones with their current progress)."""
        docs, total = await self.store.page(user_id=owner, limit=limit, offset=offset)
        out: list[D] = []
        for doc in docs:
            live = self.items.get(self.job_id(doc))
            out.append(self._document(live) if live is not None else await self._stored_document(doc))
        return out, total

    async def _stored_document(self, doc: D) -> D:
        """A stored document as it reads now: one another process runs carries its latest progress."""
        if doc.status == "running" and self.link is not None and self.link.relay is not None:
            return await self._with_remote_progress(self.link.relay.store, self.job_id(doc), doc)
        return doc

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

        try:
            try:
                job, target = self.job(live)
                self.runs.pool.submit(
                    job,
                    lambda kind, payload: call(self._on_message, live, kind, payload),
                    lambda outcome: call(resolve, outcome),
                    target=target,
                )
            except Exception as exc:  # the pool refused it (closing): it ends failed rather than waiting forever
                log.warning("Could not start %s %s: %s", self.noun, self.job_id(live.doc), exc)
                resolve(
                    JobOutcome("failed", error=f"could not start: {type(exc).__name__}", error_code="INTERNAL_ERROR")
                )
            outcome = await done
            if not isinstance(outcome, JobOutcome) or outcome.from_worker:
                # Messages come by another path than the outcome: its last progress may still be in flight.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(live.worker_done.wait(), END_WAIT_S)
            if live.started_write is not None:  # its "running" must not land after the end
                await asyncio.gather(live.started_write, return_exceptions=True)
            await self._finish(live, outcome)
        finally:
            live.ended.set()

    def _on_message(self, live: LiveJob[D, R], kind: str, payload: dict[str, Any]) -> None:
        if kind == worker.END:
            live.worker_done.set()
            return
        doc = live.doc
        if not live.active or live.handed_back:  # handed back: another executor's attempt is the one heard
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
        if live.handed_back:  # the executor that gives it back stopped it: whoever claims it next runs it
            await self.store.requeue(self.job_id(live.doc))
            return
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
        self._announce(self._document(live), live.user_id, logged=live.claimed)

    def _announce(self, doc: D, user_id: int | None, *, logged: bool) -> None:
        event = self.event(doc, user_id)
        if logged:  # named as a run: the event log keeps it, so every process of the deployment streams it
            event = events.Event(event.type, {**event.payload, "run_id": self.job_id(doc)}, user_id=event.user_id)
        self.runs.bus.publish(event)

    # Through the run queue --------------------------------------------------------------------------------
    async def _enqueue(self, queue: RunQueue, doc: D, request: R, *, user_id: int | None) -> D:
        """Store the document ("queued") and queue the job for any executor; over the user's limit: 429."""
        from cracktrader.runs.config import redact

        job_id = self.job_id(doc)
        spec: dict[str, Any] = request.model_dump(mode="json")  # type: ignore[attr-defined]
        await self.store.create(doc, user_id=user_id, server_id=self.runs.server_id)
        try:
            await queue.enqueue(
                user_id=user_id,
                kind=self.kind,
                strategy_name=str(spec.get("strategy_name", "")),
                timeframe=str(spec.get("timeframe", "")),
                exchange=str(spec.get("exchange") or ""),
                config=redact(spec),
                spec=spec,
                now=datetime.now(UTC),
                run_id=job_id,
            )
        except BaseException:
            await self.store.discard(job_id)
            raise
        if self.link is not None and self.link.relay is not None:
            await self._mirror(self.link.relay, job_id)  # subscribed before the first event: none is missed
        self._announce(doc, user_id, logged=True)
        return doc.model_copy()

    async def _mirror(self, relay: EventRelay, job_id: str) -> None:
        """Hand the events of a job accepted here, wherever it runs, to this process's streams until it ends."""
        sub = await relay.subscribe(job_id, since=0)  # a new id: its log holds nothing yet, and nothing is skipped

        async def pump() -> None:
            try:
                while True:
                    try:
                        item = await asyncio.wait_for(sub.get(), MIRROR_CHECK_S)
                    except TimeoutError:
                        if await self._ended_silently(job_id):
                            break
                        continue
                    if item is None:
                        break
                    status = item.event.payload.get("status")
                    # Its first event this process published itself, as it does all of a job it runs (or ran).
                    if status != "queued" and job_id not in self.items:
                        self.runs.bus.publish(item.event, to_sinks=False)
                    if status not in ACTIVE_STATUSES:
                        break
            finally:
                sub.close()
                self._mirrors.pop(job_id, None)

        self._mirrors[job_id] = asyncio.get_running_loop().create_task(pump(), name=f"{self.noun}-mirror-{job_id}")

    async def execute_claimed(self, claim: Claim) -> JobResult:
        """Run a job an executor claimed from the queue to its end; how it ended, as the queue records it.

        Cancelled (the executor drains): the job stops after the chunk in hand and goes back to the queue.
        """
        stored = await self.store.get(claim.run_id)
        if stored is None:
            raise RuntimeError(f"the {self.noun} {claim.run_id} has no stored document")
        doc: D = stored[0]
        if doc.status not in ACTIVE_STATUSES:  # cancelled while it waited
            return QUEUE_RESULT.get(str(doc.status), "stopped")
        doc.status, doc.started_at = "queued", None  # a job taken back from a lapsed executor starts over
        try:
            request = self.request_type.model_validate(claim.spec)
        except Exception as exc:  # its document must end too, not stay queued with its run failed
            doc.status, doc.ended_at = "failed", datetime.now(UTC)
            doc.error, doc.error_code = f"The queued request no longer reads: {type(exc).__name__}", "INTERNAL_ERROR"
            self._announce(await self.save(doc, None), claim.user_id, logged=True)
            raise
        live: LiveJob[D, R] = LiveJob(doc, request, claim.user_id, claimed=True)
        self.items[claim.run_id] = live
        self._forget_old()
        live.task = asyncio.create_task(self._run(live), name=f"{self.noun}-{claim.run_id}")
        try:
            await asyncio.shield(live.task)
        except asyncio.CancelledError:
            live.handed_back = True
            self.runs.pool.stop(claim.run_id)
            raise
        return QUEUE_RESULT.get(str(live.doc.status), "failed")

    def holds(self, job_id: str) -> bool:
        """Whether this process runs the job (a cancel asked of another process reaches it here)."""
        live = self.items.get(job_id)
        return live is not None and live.active and not live.handed_back

    async def cancel_here(self, job_id: str, _args: dict[str, Any]) -> dict[str, Any]:
        """A cancel another process asked for: carried out, answered with the status (the store has the rest)."""
        doc = await self.cancel(job_id, owner=None)
        return {self.id_field: job_id, "status": str(doc.status)}

    async def _ended_silently(self, job_id: str) -> bool:
        """Whether a job followed here ended with no event to say so (a lapsed lease failed it); if so, say it."""
        stored = await self.store.get(job_id)
        if stored is None or stored[0].status in ACTIVE_STATUSES:
            return False
        self._announce(stored[0], stored[1], logged=True)
        return True

    async def _cancel_elsewhere(self, link: QueueLink, job_id: str, *, owner: int | None) -> D:
        """Cancel a job this process does not run: still queued, here; claimed, by the process that runs it."""
        doc = await self.get(job_id, owner=owner)
        if doc.status not in ACTIVE_STATUSES:
            return doc
        now = datetime.now(UTC)
        if await link.queue.cancel_queued(job_id, now):
            stored = await self.store.get(job_id)
            user_id = stored[1] if stored is not None else None
            doc.status, doc.ended_at = "cancelled", now
            doc = await self.save(doc, None)
            mirror = self._mirrors.pop(job_id, None)
            if mirror is not None:  # this process announces the end itself
                mirror.cancel()
            self._announce(doc, user_id, logged=True)
            return doc
        if link.commands is not None:
            # A job claimed a moment ago may not be held yet where it runs: unanswered, it is asked once more.
            for _ in range(2):
                if await link.commands.call(job_id, f"cancel_{self.kind}", {}, timeout_s=REMOTE_CANCEL_WAIT_S):
                    break
                if (await self.get(job_id, owner=owner)).status not in ACTIVE_STATUSES:  # it ended meanwhile
                    break
        return await self.get(job_id, owner=owner)

    async def _with_remote_progress(self, log_store: EventStore, job_id: str, doc: D) -> D:
        """A job another process runs, with the progress its latest event in the log carries."""
        last = await log_store.last_of_type(job_id, self.event(doc, None).type)
        if last is None or last.event.payload.get("status") != "running":
            return doc
        payload = last.event.payload
        with contextlib.suppress(KeyError, TypeError):
            self.on_progress(doc, payload)
            p = doc.progress
            p.fraction = p.done / p.total if p.total else 0.0
            if doc.started_at is not None and 0 < p.done < p.total:
                elapsed = (datetime.now(UTC) - doc.started_at).total_seconds()
                p.eta_seconds = round(elapsed / p.done * (p.total - p.done), 3)
        return doc

    def _check_owner(self, live: LiveJob[D, R], owner: int | None) -> None:
        if owner is not None and live.user_id != owner:
            raise self.not_found(self.job_id(live.doc))

    def _forget_old(self) -> None:
        ended = [live for live in self.items.values() if not live.active and live.ended.is_set()]
        for live in ended[: max(0, len(ended) - KEEP_ENDED)]:
            self.items.pop(self.job_id(live.doc), None)
