"""Run events across processes: appended to the event log, announced by a notice, read back by every process.

A publisher appends a run's events to the log (numbered per run) and sends a notice with the run id and the
numbers. Each process keeps one listener and one reader task: on a notice it reads the run's log after the last
number its subscribers have, and hands each subscriber every event after its own last one, in order and exactly
once. Notices may be lost (a listener's connection killed): after a reconnect every followed run is read again,
so the log, not the notice, makes delivery complete. A subscriber may start from a number it already has (a
client reconnecting) and gets exactly what it missed, then live events. One that falls behind is dropped and
told to resynchronise (`resync`), so it never slows the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection

from cracktrader.db.event_store import EventStore, LoggedEvent
from cracktrader.notify import Notices, PostgresNotices
from cracktrader.runs.events import Event

__all__ = ["EventRelay", "RelaySubscription"]

log = logging.getLogger(__name__)

READ_BATCH = 500


@dataclass(frozen=True, slots=True)
class _Notice:
    run_id: str
    first: int
    last: int

    @classmethod
    def parse(cls, payload: str) -> _Notice | None:
        """`run_id:first-last` (see `notice_text`), or None."""
        run_id, _, numbers = payload.rpartition(":")
        first, _, last = numbers.partition("-")
        if not run_id or not first.isdigit() or not last.isdigit():
            return None
        return cls(run_id, int(first), int(last))


def notice_text(run_id: str, first: int, last: int) -> str:
    """The notice of events first..last of a run."""
    return f"{run_id}:{first}-{last}"


@dataclass(eq=False)
class RelaySubscription:
    """One subscriber's bounded queue of logged events; None at its end once it was dropped (resynchronise)."""

    relay: EventRelay
    run_id: str | None  # None: every run noticed after it subscribed
    queue: asyncio.Queue[LoggedEvent | None]
    seen: dict[str, int] = field(default_factory=dict)  # last number queued, per run
    paused: set[str] = field(default_factory=set)  # runs whose next events wait in the log for room in the queue
    caught_up: bool = False  # it had every event once (a client still reading a backlog is never "behind")
    resync: bool = False

    async def get(self) -> LoggedEvent | None:
        """The next event, or None once dropped for falling behind (`resync` is then True)."""
        if self.resync and self.queue.empty():
            return None
        item = await self.queue.get()
        if self.paused and self.queue.qsize() <= self.relay.queue_size // 2:
            # Room again: the rest comes from the log, read at the pace this subscriber reads.
            runs, self.paused = self.paused, set()
            self.relay.read_again(runs)
        return item

    def close(self) -> None:
        """Stop receiving events."""
        self.relay.unsubscribe(self)


class EventRelay:
    """This process's end of the event log: publish, and deliver every process's events to local subscribers."""

    def __init__(self, store: EventStore, notices: Notices, *, queue_size: int = 256, max_lag: int = 10_000) -> None:
        self.store = store
        self.notices = notices
        self.queue_size = queue_size
        # A subscriber this many events behind a run's latest has fallen behind: it is dropped (resynchronise).
        self.max_lag = max_lag
        self._latest: dict[str, int] = {}
        self._subs: set[RelaySubscription] = set()
        self._pending: set[str] = set()
        self._fresh: dict[str, int] = {}  # first number of a run's first notice, for subscribers to every run
        self._wake = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen for notices and start the reader."""
        self._wake = asyncio.Event()
        await self.notices.start(self._on_notice)
        self._reader = asyncio.create_task(self._read_forever(), name="cracktrader-event-relay")

    async def close(self) -> None:
        """Stop listening and reading; subscribers get nothing more."""
        await self.notices.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    async def publish(self, run_id: str, events: Sequence[Event]) -> list[LoggedEvent]:
        """Append a run's events to the log and announce them to every process (this one included)."""
        notices = self.notices
        if isinstance(notices, PostgresNotices):

            async def notify(conn: AsyncConnection, logged: list[LoggedEvent]) -> None:
                # In the append's own transaction: one commit for both, and no notice for events never stored.
                await notices.publish_in(conn, notice_text(run_id, logged[0].seq, logged[-1].seq))

            return await self.store.append(run_id, events, before_commit=notify)
        logged = await self.store.append(run_id, events)
        if logged:
            await notices.publish(notice_text(run_id, logged[0].seq, logged[-1].seq))
        return logged

    async def subscribe(self, run_id: str | None = None, *, since: int | None = None) -> RelaySubscription:
        """A subscriber to one run's events after number `since` (None: from now on), or to every run from now on."""
        # Unbounded as a queue, bounded by `_deliver` at queue_size events plus the resync marker.
        sub = RelaySubscription(self, run_id, asyncio.Queue())
        if run_id is not None:
            sub.seen[run_id] = await self.store.last_seq(run_id) if since is None else max(0, since)
            self._pending.add(run_id)  # events it missed (a `since` in the past) come from the log now
            self._wake.set()
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: RelaySubscription) -> None:
        self._subs.discard(sub)

    def read_again(self, runs: set[str]) -> None:
        """Read these runs' logs again (a paused subscriber has room)."""
        self._pending.update(runs)
        self._wake.set()

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    def _on_notice(self, payload: str | None) -> None:
        if payload is None:
            # Notices may have been lost: read every followed run again (each subscriber gets only what is new).
            self._pending.update(r for s in self._subs for r in s.seen)
        else:
            notice = _Notice.parse(payload)
            if notice is None:
                log.warning("Ignored a malformed event notice %r", payload[:100])
                return
            self._pending.add(notice.run_id)
            self._fresh.setdefault(notice.run_id, notice.first)
            self._latest[notice.run_id] = max(self._latest.get(notice.run_id, 0), notice.last)
        self._wake.set()

    async def _read_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                run_id = self._pending.pop()
                try:
                    await self._read_run(run_id)
                except Exception:
                    # The database may be briefly away: try this run again shortly (nothing is lost, it is in the log).
                    log.warning("Could not read the events of run %s; retrying", run_id, exc_info=True)
                    self._pending.add(run_id)
                    await asyncio.sleep(0.5)

    async def _read_run(self, run_id: str) -> None:
        first = self._fresh.pop(run_id, None)
        subs = []
        for sub in self._subs:
            if sub.run_id is None and run_id not in sub.seen and first is not None:
                sub.seen[run_id] = first - 1  # a run first noticed after it subscribed: from that notice on
            if run_id in sub.seen and (sub.run_id is None or sub.run_id == run_id):
                subs.append(sub)
        if not subs:
            return
        while True:
            reading = [s for s in subs if run_id not in s.paused and not s.resync]
            if not reading:
                break
            after = min(s.seen[run_id] for s in reading)
            batch = await self.store.read_after(run_id, after, limit=READ_BATCH)
            for item in batch:
                for sub in reading:
                    if run_id not in sub.paused and item.seq == sub.seen[run_id] + 1:
                        self._deliver(sub, item)
            if batch:
                self._latest[run_id] = max(self._latest.get(run_id, 0), batch[-1].seq)
            if len(batch) < READ_BATCH:
                break
        for sub in subs:
            behind = self._latest.get(run_id, 0) - sub.seen[run_id]
            if behind <= 0:
                sub.caught_up = True
            elif sub.caught_up and run_id in sub.paused and behind > self.max_lag:
                self._drop(sub)

    def _deliver(self, sub: RelaySubscription, item: LoggedEvent) -> None:
        if sub.queue.qsize() >= self.queue_size:
            sub.paused.add(item.run_id)  # the rest stays in the log until it reads (RelaySubscription.get)
            return
        sub.queue.put_nowait(item)
        sub.seen[item.run_id] = item.seq

    def _drop(self, sub: RelaySubscription) -> None:
        # A slow client must not hold the others back or make this process read for it forever: it is told to
        # resynchronise after the events it has (none is lost: it resumes from its last number).
        sub.resync = True
        self._subs.discard(sub)
        sub.queue.put_nowait(None)
        log.warning("Dropped an event subscriber over %d events behind; it must resynchronise", self.max_lag)
