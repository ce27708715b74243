"""Download jobs: `data.service.download` (what `cracktrader data download` runs) in a worker thread, with progress.

Bounded: a few jobs run at once, a job covers at most `MAX_JOB_BARS` bars, and only the last `KEEP_JOBS`
finished jobs are remembered. A cancel is seen at the next progress report (every chunk of fetched bars).
Each job publishes `download_progress` events (its document) on the server's event bus: when it starts, at most
every `throttle_s` while it fetches, and when it ends.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cracktrader.data import service as data_service
from cracktrader.data.candles import ms_to_iso
from cracktrader.data.timeframes import Timeframe
from cracktrader.errors import CracktraderError
from cracktrader.runs import events
from cracktrader.runs.document import now_iso
from cracktrader.settings import Settings
from cracktrader.web.data.service import dataset_dict
from cracktrader.web.errors import ApiError

MAX_ACTIVE_JOBS = 2
MAX_JOB_BARS = 5_000_000
KEEP_JOBS = 100
PROGRESS_THROTTLE_S = 0.25  # at most 4 progress events a second per job; its first and last always go out


class DownloadCanceled(Exception):
    """Raised from the progress callback to stop a canceled download between chunks."""


@dataclass(slots=True)
class DownloadJob:
    """One download and where it is; written by its worker thread, read by requests."""

    id: str
    owner: int | None
    exchange: str
    symbol: str
    timeframe: Timeframe
    start: int
    end: int
    created_at: str
    status: str = "queued"
    done: int = 0
    total: int = 0
    started: float | None = None
    finished_at: str | None = None
    error: dict[str, str] | None = None
    dataset: dict[str, Any] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    user_id: int | None = None  # who started it: its events are theirs (and every admin's)
    on_progress: Callable[[DownloadJob], None] | None = None

    def progress(self, done: int, total: int) -> None:
        """The download's progress callback: records the counts, reports them, and stops a canceled job."""
        self.done, self.total = int(done), int(total)
        if self.on_progress is not None:
            self.on_progress(self)
        if self.cancel.is_set():
            raise DownloadCanceled

    def document(self) -> dict[str, Any]:
        """The job as the API shows it."""
        total = self.total or self.timeframe.count(self.start, self.end)
        done = min(self.done, total) if self.status != "completed" else total
        eta = None
        if self.status == "running" and self.started is not None and 0 < done < total:
            elapsed = time.monotonic() - self.started
            eta = round(elapsed / done * (total - done), 3)
        return {
            "id": self.id,
            "status": self.status,
            "exchange": self.exchange,
            "symbol": self.symbol,
            "timeframe": self.timeframe.name,
            "start": ms_to_iso(self.start),
            "end": ms_to_iso(self.end),
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "progress": {
                "done": done,
                "total": total,
                "fraction": round(done / total, 6) if total else 1.0,
                "eta_s": 0.0 if self.status == "completed" else eta,
            },
            "error": self.error,
            "dataset": self.dataset,
        }


class ProgressEvents:
    """One job's `download_progress` events: the first and the last always, others at most every `throttle_s`."""

    def __init__(self, bus: events.EventBus, throttle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._bus = bus
        self._throttle_s = throttle_s
        self._clock = clock
        self._last: float | None = None

    def __call__(self, job: DownloadJob, *, force: bool = False) -> None:
        """Publish the job's document unless one went out less than `throttle_s` ago (`force`: always)."""
        now = self._clock()
        if not force and self._last is not None and now - self._last < self._throttle_s:
            return
        self._last = now
        # Called from the download's worker thread as well as the loop: the bus hands it to the loop.
        self._bus.publish_threadsafe(events.Event(events.DOWNLOAD_PROGRESS, job.document(), user_id=job.user_id))


class DownloadJobs:
    """The server's download jobs."""

    def __init__(self, settings: Settings, throttle_s: float = PROGRESS_THROTTLE_S) -> None:
        self._settings = settings
        self._jobs: dict[str, DownloadJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.bus: events.EventBus | None = None  # bound when the server starts
        self.throttle_s = throttle_s

    def _active(self) -> list[DownloadJob]:
        return [j for j in self._jobs.values() if j.status in ("queued", "running")]

    def submit(
        self,
        *,
        owner: int | None,
        exchange: str,
        symbol: str,
        tf: Timeframe,
        start: int,
        end: int,
        user_id: int | None = None,
    ) -> DownloadJob:
        """Start a job; 409 TOO_MANY_DOWNLOADS when `MAX_ACTIVE_JOBS` run, 422 DOWNLOAD_TOO_LARGE over the bar cap."""
        bars = tf.count(start, end)
        if bars > MAX_JOB_BARS:
            raise ApiError(
                422,
                "DOWNLOAD_TOO_LARGE",
                f"The range is {bars:,} {tf} bars; one download takes at most {MAX_JOB_BARS:,}: split it",
                details={"bars": bars, "max_bars": MAX_JOB_BARS},
            )
        active = self._active()
        if len(active) >= MAX_ACTIVE_JOBS:
            raise ApiError(
                409,
                "TOO_MANY_DOWNLOADS",
                f"{len(active)} downloads are running (at most {MAX_ACTIVE_JOBS}); wait for one or cancel one",
                details={"active": [j.id for j in active], "max_active": MAX_ACTIVE_JOBS},
            )
        job = DownloadJob(uuid.uuid4().hex, owner, exchange, symbol, tf, start, end, now_iso(), user_id=user_id)
        self._jobs[job.id] = job
        self._forget_old()
        task = asyncio.get_running_loop().create_task(self._run(job), name=f"download-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _run(self, job: DownloadJob) -> None:
        report = ProgressEvents(self.bus, self.throttle_s) if self.bus is not None else None
        job.on_progress = report
        job.status, job.started = "running", time.monotonic()
        if report is not None:
            report(job, force=True)
        try:
            info = await asyncio.to_thread(
                data_service.download,
                job.exchange,
                job.symbol,
                job.timeframe,
                job.start,
                job.end,
                progress=job.progress,
                settings=self._settings,
            )
            job.dataset = dataset_dict(info)
            job.status = "completed"
        except DownloadCanceled:
            job.status = "canceled"
        except CracktraderError as exc:
            job.status, job.error = "failed", {"code": exc.code, "message": exc.message}
        except Exception as exc:  # the job reports it; the server keeps serving
            job.status, job.error = "failed", {"code": "INTERNAL_ERROR", "message": f"{type(exc).__name__}: {exc}"}
        finally:
            if job.cancel.is_set() and job.status == "running":
                job.status = "canceled"
            job.finished_at = now_iso()
            job.on_progress = None
            if report is not None:
                report(job, force=True)

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.status not in ("queued", "running")]
        for job in finished[: max(0, len(finished) - KEEP_JOBS)]:
            del self._jobs[job.id]

    def get(self, job_id: str, owner: int | None) -> DownloadJob:
        """A job the caller may see (their own; every job for admins and with auth off); 404 otherwise."""
        job = self._jobs.get(job_id)
        if job is None or (owner is not None and job.owner != owner):
            raise ApiError(404, "NOT_FOUND", f"No download job {job_id!r}", details={"job_id": job_id[:64]})
        return job

    def cancel(self, job_id: str, owner: int | None) -> DownloadJob:
        """Ask a job to stop (it stops at its next chunk); a finished job is returned as it is."""
        job = self.get(job_id, owner)
        if job.status in ("queued", "running"):
            job.cancel.set()
        return job

    def holds(self, job_id: str) -> bool:
        """Whether the job is this process's (another process forwards its reads and cancels here)."""
        return job_id in self._jobs

    def calls(self) -> dict[str, Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]]:
        """Reads and cancels another process forwards (its caller's owner filter in `owner`)."""

        async def get(job_id: str, args: dict[str, Any]) -> dict[str, Any]:
            return self.get(job_id, _owner(args)).document()

        async def cancel(job_id: str, args: dict[str, Any]) -> dict[str, Any]:
            return self.cancel(job_id, _owner(args)).document()

        return {"download_get": get, "download_cancel": cancel}

    async def close(self) -> None:
        """Cancel every job and wait for their threads to notice."""
        for job in self._active():
            job.cancel.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _owner(args: dict[str, Any]) -> int | None:
    """The forwarded owner filter (None: every job, for admins and with auth off)."""
    owner = args.get("owner")
    if owner is None or (isinstance(owner, int) and not isinstance(owner, bool)):
        return owner
    raise ApiError(404, "NOT_FOUND", "No such download job")
