"""Writes this process's run events to the event log, in the order the bus published them, a batch per run.

The bus stays the fast path inside one process; the log numbers every event of a run so a stream on any process
can follow it and resume from the last number it has. One writer task: a run's events keep their order, and
whatever queued up while one append was committing goes in the next (one transaction per run per batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from cracktrader.db.event_store import EventStore
from cracktrader.notify import open_notices
from cracktrader.runs.event_relay import EventRelay
from cracktrader.runs.events import Event, EventBus

__all__ = ["RunEventLog", "open_event_log"]

log = logging.getLogger(__name__)

# Events waiting for the database beyond this are a database that is gone: they are dropped (and logged), not
# held until memory runs out; a stream that resumes later then misses them, and its client resynchronises.
MAX_BACKLOG = 200_000
RETRY_S = 0.5
RUN_ID_MAX = 32  # the log's run_id column


def _loggable(run_id: str) -> bool:
    """A run id the log can hold (the server's are 32 hex digits)."""
    return 0 < len(run_id) <= RUN_ID_MAX


def _transient(exc: DBAPIError) -> bool:
    """A database that is away or busy (worth another try), not a row it refuses."""
    return isinstance(exc, OperationalError)


class RunEventLog:
    """Taps the bus for events that name a run and appends them to the log through the relay."""

    def __init__(self, bus: EventBus, relay: EventRelay, types: frozenset[str]) -> None:
        self.bus = bus
        self.relay = relay
        self.types = types
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.closers: list[Callable[[], Awaitable[object]]] = []

    def start(self) -> None:
        """Take the bus's events of `types` (all of them, however slow the database) and start writing."""
        self.bus.add_sink(self.types, self._queue.put_nowait)
        self._task = asyncio.create_task(self._write_forever(), name="cracktrader-event-log")

    async def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (within the timeout), then stop."""
        if self._task is None:
            return
        self.bus.remove_sink(self._queue.put_nowait)
        self._queue.put_nowait(None)  # the end: what is before it is written first
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.relay.close()
        for closer in self.closers:
            with contextlib.suppress(Exception):
                await closer()

    async def _write_forever(self) -> None:
        queue = self._queue
        while True:
            first = await queue.get()
            items = [first]
            while not queue.empty():
                items.append(queue.get_nowait())
            ended = None in items
            batches: dict[str, list[Event]] = defaultdict(list)
            for event in items:
                if event is not None and isinstance(run_id := event.payload.get("run_id"), str) and _loggable(run_id):
                    batches[run_id].append(event)
            for run_id, events in batches.items():
                await self._append(run_id, events)
            if ended:
                return
            if queue.qsize() > MAX_BACKLOG:
                dropped = queue.qsize()
                while not queue.empty():
                    if queue.get_nowait() is None:
                        return
                log.error("The event log fell %d events behind (is the database down?); they were dropped", dropped)

    async def _append(self, run_id: str, events: list[Event]) -> None:
        while True:
            try:
                await self.relay.publish(run_id, events)
                self.written += len(events)
                return
            except (DBAPIError, OSError) as exc:
                if isinstance(exc, DBAPIError) and not exc.connection_invalidated and not _transient(exc):
                    log.error("Could not write %d event(s) of run %s to the log: %s", len(events), run_id, exc)
                    return
                # The database may be briefly away: try again; the order of a run's events must hold.
                log.warning("Could not write %d event(s) of run %s to the log; retrying", len(events), run_id,
                            exc_info=True)  # fmt: skip
                await asyncio.sleep(RETRY_S)
                if self._queue.qsize() > MAX_BACKLOG:
                    log.error("Dropped %d event(s) of run %s: the event log cannot be written", len(events), run_id)
                    return


async def open_event_log(
    *,
    bus: EventBus,
    engine: AsyncEngine,
    types: frozenset[str],
    redis_url: str | None,
    redis_prefix: str,
    queue_size: int,
    keep_days: int,
) -> RunEventLog:
    """The relay on this deployment's notices (Redis, else PostgreSQL, else in-process) with the bus's writer, started;
    events older than `keep_days` are pruned first."""
    store = EventStore(engine)
    pruned = await store.prune(before=datetime.now(UTC) - timedelta(days=keep_days))
    if pruned:
        log.info("Pruned %d run events older than %d days from the event log", pruned, keep_days)
    notices, close_client = await open_notices(
        redis_url=redis_url, redis_prefix=redis_prefix, engine=engine, name="run-events"
    )
    relay = EventRelay(store, notices, queue_size=queue_size)
    await relay.start()
    event_log = RunEventLog(bus, relay, types)
    if close_client is not None:
        event_log.closers.append(close_client)
    event_log.start()
    return event_log
