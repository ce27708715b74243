"""The alert webhook: each alert POSTed as JSON, retried with exponential backoff, off the trading path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import httpx

from cracktrader.runs.alerts import Alert
from cracktrader.runs.document import now_iso
from cracktrader.runs.events import ALERT
from cracktrader.web.log_redaction import redact_url

log = logging.getLogger(__name__)

# Alerts waiting for the webhook; beyond this the oldest waiting one is dropped (it is stored and streamed anyway).
QUEUE_SIZE = 1000
TIMEOUT_S = 10.0

Sleep = Callable[[float], Awaitable[None]]


class WebhookPoster:
    """POSTs alerts to one URL in the order raised, each up to `attempts` times, waiting `backoff_s * 2**n` between.

    A 2xx ends the alert's delivery; a 5xx, a 408, a 429 or a network error is tried again; any other answer (the
    receiver refuses it) is given up at once. The URL is logged only through `redact_url`.
    """

    def __init__(
        self,
        url: str,
        *,
        attempts: int = 5,
        backoff_s: float = 1.0,
        sleep: Sleep = asyncio.sleep,
        timeout_s: float = TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = url
        self.shown_url = redact_url(url)
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._sleep = sleep
        self._client = httpx.AsyncClient(timeout=timeout_s, transport=transport, follow_redirects=False)
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.failed = 0

    def __repr__(self) -> str:
        return f"WebhookPoster({self.shown_url!r})"

    def submit(self, alert: Alert) -> None:
        """Queue an alert for delivery (on the event loop's thread); returns at once."""
        if self._queue.full():
            dropped = self._queue.get_nowait()
            self._queue.task_done()
            self.failed += 1
            log.error("Alert webhook %s is behind: dropped alert %s (%s)", self.shown_url, dropped.id, dropped.kind)
        self._queue.put_nowait(alert)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="alert-webhook")

    async def _run(self) -> None:
        while True:
            alert = await self._queue.get()
            try:
                if await self.post(alert):
                    self.delivered += 1
                else:
                    self.failed += 1
            finally:
                self._queue.task_done()

    async def post(self, alert: Alert) -> bool:
        """Deliver one alert; True once the receiver took it, False when it refused it or every attempt failed."""
        body = {"type": ALERT, "payload": alert.model_dump(mode="json"), "timestamp": now_iso()}
        for attempt in range(self.attempts):
            problem: str
            try:
                response = await self._client.post(self._url, json=body)
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            else:
                if response.is_success:
                    return True
                problem = f"HTTP {response.status_code}"
                if not _retryable(response.status_code):
                    log.error("Alert webhook %s refused alert %s: %s", self.shown_url, alert.id, problem)
                    return False
            if attempt + 1 < self.attempts:
                delay = self.backoff_s * 2**attempt
                log.warning("Alert webhook %s failed (%s); attempt %d of %d in %.1f s", self.shown_url, problem,
                            attempt + 2, self.attempts, delay)  # fmt: skip
                await self._sleep(delay)
            else:
                log.error("Alert webhook %s failed %d times (%s); alert %s not delivered", self.shown_url,
                          self.attempts, problem, alert.id)  # fmt: skip
        return False

    async def drain(self) -> None:
        """Wait until every queued alert was delivered or given up."""
        await self._queue.join()

    async def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued (within `timeout_s`), then stop and close the connection pool."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drain(), timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()


def _retryable(status: int) -> bool:
    return status >= 500 or status in (408, 429)
