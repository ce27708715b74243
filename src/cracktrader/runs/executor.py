"""An executor loop: claims queued runs, heartbeats their leases, runs them, finishes; stop() drains."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy.exc import DBAPIError

from cracktrader.db.run_queue import Claim, LeaseLostError, RunQueue

log = logging.getLogger(__name__)

JobResult = Literal["completed", "failed", "stopped"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Executor:
    """One executor: one run at a time, so the global limits count real work."""

    def __init__(
        self,
        queue: RunQueue,
        executor_id: str,
        run_job: Callable[[Claim], Coroutine[Any, Any, JobResult]],
        *,
        kinds: tuple[str, ...] = ("backtest", "sweep", "walkforward", "paper", "live"),
        poll_s: float = 0.05,
        heartbeat_s: float | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.queue, self.executor_id, self.run_job, self.kinds = queue, executor_id, run_job, kinds
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s or queue.settings.run_heartbeat_s
        self.clock = clock
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.done: list[str] = []
        self._drain_timeout = 10.0

    def start(self) -> None:
        """Start the loop on the running event loop."""
        self._task = asyncio.create_task(self._loop())

    async def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Stop claiming; the current run finishes within the timeout or is handed back to the queue."""
        self._stopping.set()
        self._drain_timeout = drain_timeout_s
        if self._task is not None:
            await self._task

    async def _heartbeat(self, claim: Claim) -> None:
        """Renew the lease until it is found lost (another executor took the run over): then return."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                held = await self.queue.heartbeat(self.executor_id, self.clock())
            except (DBAPIError, OSError):
                # One missed beat must not end them all: the lease lapses only if the database stays away.
                log.warning("Executor %s could not renew its lease; retrying", self.executor_id, exc_info=True)
                continue
            if held.get(claim.run_id) != claim.token:
                return

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.queue.reclaim_expired(self.clock())
                claim = await self.queue.claim(self.executor_id, self.kinds, self.clock())
            except (DBAPIError, OSError):
                # The database is briefly away: nothing is claimed meanwhile, and the loop must outlive it.
                log.warning("Executor %s could not reach the run queue; retrying", self.executor_id, exc_info=True)
                claim = None
            if claim is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.poll_s)
                continue
            await self._execute(claim)

    async def _execute(self, claim: Claim) -> None:
        beat = asyncio.create_task(self._heartbeat(claim))
        job: asyncio.Task[JobResult] = asyncio.create_task(self.run_job(claim))
        stop = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({job, stop, beat}, return_when=asyncio.FIRST_COMPLETED)
            if beat.done() and not job.done() and not beat.cancelled() and beat.exception() is None:
                # The lease lapsed and the queue gave the run to another executor (or failed it): this attempt
                # stops as a hand-back does, writing and publishing nothing more.
                log.warning(
                    "Executor %s lost its lease on run %s; stopping its attempt", self.executor_id, claim.run_id
                )
                job.cancel()
                return
            if not job.done():
                # Draining: give the run its grace period, then hand it back.
                await asyncio.wait({job}, timeout=self._drain_timeout)
            if job.done():
                error = job.exception()
                status: JobResult = "failed" if error else job.result()
                if error is not None:
                    log.error("Run %s failed in executor %s: %s", claim.run_id, self.executor_id, error)
                reason = None if error is None else str(error) or type(error).__name__
                with contextlib.suppress(LeaseLostError):
                    await self.queue.finish(claim.run_id, claim.token, status, self.clock(), error=reason)
                    self.done.append(claim.run_id)
            else:
                job.cancel()
                with contextlib.suppress(LeaseLostError):
                    await self.queue.release(claim.run_id, claim.token)
        finally:
            stop.cancel()
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await beat
