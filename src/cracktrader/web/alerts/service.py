"""The server's alert sink: each alert stored, then on the bus (the `alerts` channel), then to the webhook.

`emit` only queues (from any thread): the trading path never waits for the database, a client or the webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from cracktrader.db.alert_store import AlertStore
from cracktrader.runs import events
from cracktrader.runs.alerts import Alert, AlertKind
from cracktrader.settings import Settings
from cracktrader.web.alerts.webhook import Sleep, WebhookPoster

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000


class AlertService:
    """Delivers alerts in the order raised: the row, the stream event, the webhook post (each on its own pace)."""

    def __init__(
        self, store: AlertStore | None, bus: events.EventBus | None, webhook: WebhookPoster | None = None
    ) -> None:
        self.store = store
        self.bus = bus
        self.webhook = webhook
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    @classmethod
    def from_settings(
        cls, settings: Settings, store: AlertStore | None, bus: events.EventBus | None, *, sleep: Sleep = asyncio.sleep
    ) -> AlertService:
        """The service with the webhook of `CRACKTRADER_ALERT_WEBHOOK`, if set."""
        url = settings.alert_webhook.get_secret_value().strip() if settings.alert_webhook is not None else ""
        webhook = (
            WebhookPoster(
                url, attempts=settings.alert_webhook_attempts, backoff_s=settings.alert_webhook_backoff_s, sleep=sleep
            )
            if url
            else None
        )
        return cls(store, bus, webhook)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver on `loop` (an `emit` from another thread is handed to it)."""
        self._loop = loop

    def emit(self, alert: Alert) -> None:
        """Queue an alert for delivery; returns at once, from any thread."""
        log.warning("Alert %s (%s) of run %s: %s", alert.kind, alert.severity, alert.run_id, alert.message)
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        loop = self._loop or running
        if loop is None or loop.is_closed():
            log.error("Alert %s of run %s raised with no event loop to deliver it", alert.kind, alert.run_id)
            return
        if running is loop:
            self._enqueue(alert)
        else:
            loop.call_soon_threadsafe(self._enqueue, alert)

    def _enqueue(self, alert: Alert) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("Alert queue full: dropped alert %s of run %s", alert.kind, alert.run_id)
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="alerts")

    async def _run(self) -> None:
        while True:
            alert = await self._queue.get()
            try:
                await self._deliver(alert)
            except Exception:
                log.exception("Could not deliver alert %s of run %s", alert.kind, alert.run_id)
            finally:
                self._queue.task_done()

    async def _deliver(self, alert: Alert) -> None:
        # Stored first: a client the stream tells can then list it.
        if self.store is not None:
            try:
                await self.store.add(alert)
            except Exception:
                log.exception("Could not store alert %s of run %s", alert.kind, alert.run_id)
        if self.bus is not None:
            payload = alert.model_dump(mode="json")
            self.bus.publish(events.Event(events.ALERT, payload, user_id=alert.user_id))
        if self.webhook is not None:
            self.webhook.submit(alert)

    async def drain(self) -> None:
        """Wait until every alert raised so far is stored, streamed and (if there is a webhook) posted or given up."""
        await self._queue.join()
        if self.webhook is not None:
            await self.webhook.drain()

    async def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued (within `timeout_s`), then stop."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.webhook is not None:
            await self.webhook.close(timeout_s)

    async def list(
        self, *, owner: int | None, run_id: str | None, kind: AlertKind | None, limit: int, offset: int
    ) -> tuple[list[Alert], int]:
        """A page of the owner's alerts (every owner's with `owner` None), newest first."""
        if self.store is None:
            return [], 0
        return await self.store.list(user_id=owner, run_id=run_id, kind=kind, limit=limit, offset=offset)
