"""In-process event bus: run events fan out to subscribers (WebSocket clients) without blocking the publisher."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from cracktrader.runs.document import now_iso

log = logging.getLogger(__name__)

STATUS_UPDATE = "status_update"
TRADE_EXECUTION = "trade_execution"
ORDER_UPDATE = "order_update"
EQUITY_UPDATE = "equity_update"
ERROR = "error"
ALERT = "alert"
SWEEP_PROGRESS = "sweep_progress"
# A session's closed candle, as its strategy receives it (only to streams that ask for candles).
CANDLE = "candle"
DOWNLOAD_PROGRESS = "download_progress"
WALKFORWARD_PROGRESS = "walkforward_progress"
# What `/ws/status` streams, and what the event log keeps of a run (what `/ws/status?run_id=` may send).
STATUS_STREAM_TYPES = frozenset(
    {STATUS_UPDATE, TRADE_EXECUTION, ERROR, ALERT, SWEEP_PROGRESS, DOWNLOAD_PROGRESS, WALKFORWARD_PROGRESS}
)
LOGGED_EVENTS = STATUS_STREAM_TYPES | {CANDLE}


@dataclass(frozen=True)
class Event:
    """`{"type", "payload", "timestamp"}` as the WebSocket stream sends it."""

    type: str
    payload: dict[str, Any]
    timestamp: str = field(default_factory=now_iso)
    # Whose runner slot the event is about, when its payload cannot say (a reset slot has no run id).
    user_id: int | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "payload": self.payload, "timestamp": self.timestamp}

    @cached_property
    def text(self) -> str:
        """The JSON text, encoded once however many clients receive it."""
        return json.dumps(self.to_dict(), allow_nan=False)


class Subscription:
    """One subscriber's bounded queue; it is closed, not waited on, when it falls behind."""

    def __init__(self, bus: EventBus, maxsize: int, types: frozenset[str] | None = None) -> None:
        self._bus = bus
        self.types = types
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=maxsize)
        self.dropped = False

    async def get(self) -> Event | None:
        """The next event, or None once the subscription was dropped or closed."""
        if self.dropped and self.queue.empty():
            return None
        return await self.queue.get()

    def close(self) -> None:
        """Stop receiving events."""
        self._bus.unsubscribe(self)


class EventBus:
    """Fan-out of events to subscribers; `publish_threadsafe` may be called from worker threads."""

    def __init__(self, *, queue_size: int = 256) -> None:
        self.queue_size = queue_size
        self._subs: set[Subscription] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Called with every event of their types, in order, on the loop: the event log's writer, not a client.
        self._sinks: list[tuple[frozenset[str], Callable[[Event], None]]] = []

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember the loop that owns the subscribers' queues."""
        self._loop = loop

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    def subscribe(self, types: frozenset[str] | None = None) -> Subscription:
        """A new subscription receiving events published after this call (only `types`, when given)."""
        sub = Subscription(self, self.queue_size, types)
        self._subs.add(sub)
        return sub

    def add_sink(self, types: frozenset[str], sink: Callable[[Event], None]) -> None:
        """Call `sink(event)` for every event of `types` published from now on (it must not block)."""
        self._sinks.append((types, sink))

    def remove_sink(self, sink: Callable[[Event], None]) -> None:
        self._sinks = [(t, s) for t, s in self._sinks if s != sink]

    def wants(self, event_type: str) -> bool:
        """Whether any subscriber receives events of this type (so a publisher can skip building them)."""
        return any(sub.types is None or event_type in sub.types for sub in self._subs) or any(
            event_type in types for types, _ in self._sinks
        )

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def publish(self, event: Event, *, to_sinks: bool = True) -> None:
        """Deliver to every sink and subscriber on the loop thread; a full queue drops that subscriber.

        `to_sinks` False: an event another process logged already, shown to this process's subscribers only.
        """
        if to_sinks:
            for types, sink in self._sinks:
                if event.type in types:
                    sink(event)
        for sub in list(self._subs):
            if sub.types is not None and event.type not in sub.types:
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                # A slow client must not slow the others or grow memory without bound.
                sub.dropped = True
                self._subs.discard(sub)
                log.warning("Dropped a slow event subscriber (queue of %d full)", self.queue_size)
                _wake(sub)

    def publish_threadsafe(self, event: Event) -> None:
        """Publish from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.publish(event)
        else:
            loop.call_soon_threadsafe(self.publish, event)


def _wake(sub: Subscription) -> None:
    """Make a blocked `get` return None so the consumer notices it was dropped."""
    try:
        sub.queue.get_nowait()
        sub.queue.put_nowait(None)
    except (asyncio.QueueEmpty, asyncio.QueueFull):
        pass
