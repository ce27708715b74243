"""ccxt's asyncio throttle with its idle time credited, so a lone request (an order) is not held back for nothing.

ccxt's leaky bucket (`ccxt.async_support.base.throttler.Throttler`) restarts its clock whenever its queue empties:
the time the bucket sat idle never refills it (ccxt issue #25556). After each request the tokens stay negative by
its cost, so the next one, however much later, waits `cost * rateLimit` ms: 10 ms for every binance order
(cost 0.2 at 50 ms), more than the whole rest of the order path. Here the idle spell refills the bucket (up to its
capacity, as ccxt's own refill), so the long-run rate and the burst stay exactly ccxt's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ccxt.async_support.base.throttler import Throttler


def _now_ms() -> float:
    return time.time() * 1000  # the clock ccxt's loop refills by


class IdleCreditThrottler(Throttler):
    """ccxt's Throttler, whose bucket also refills while no request is waiting."""

    def __init__(self, config: dict[str, Any], loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, loop)
        self.idle_since: float | None = None  # ms; when the loop last stopped

    def __call__(self, cost: float | None = None) -> asyncio.Future[None]:
        if not self.running and self.idle_since is not None:
            now = _now_ms()
            config = self.config
            config["tokens"] = min(config["tokens"] + (now - self.idle_since) * config["refillRate"],
                                   config["capacity"])  # fmt: skip
            self.idle_since = now
        future: asyncio.Future[None] = super().__call__(cost)
        return future

    async def leaky_bucket_loop(self) -> None:
        try:
            await super().leaky_bucket_loop()
        finally:
            # The loop returns in the step that emptied the queue: from here on the bucket is idle.
            self.idle_since = _now_ms()


def credit_idle_time(client: Any) -> None:
    """Give an asyncio ccxt client the throttle that credits idle time (same bucket, same loop)."""
    client.throttler = IdleCreditThrottler(client.tokenBucket, client.asyncio_loop)
