"""Rate limits and revocation notices shared by every server process through Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any

__all__ = ["RedisRateLimiter", "RedisRevocationNotices"]

log = logging.getLogger(__name__)

# GCRA (a token bucket kept as one "theoretical arrival time" per key), in one atomic round trip. Redis's own
# clock is the time, so processes on machines with skewed clocks still share one allowance.
# ARGV: seconds per request, the burst window in seconds. Returns 0 when allowed, else milliseconds to wait.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new = tat + interval
local wait = new - now - period
if wait > 0 then return math.ceil(wait * 1000) end
redis.call('SET', KEYS[1], string.format('%.6f', new), 'PX', math.ceil((new - now) * 1000) + 1)
return 0
"""

# Pause before re-subscribing after the connection dropped (a notice may have been missed: caches are dropped).
_RECONNECT_S = 0.5


class RedisRateLimiter:
    """`per_minute` requests a minute per key across all processes, in bursts of up to `per_minute`."""

    def __init__(self, client: Any, per_minute: int, *, prefix: str) -> None:
        self.per_minute = per_minute
        self._client = client
        self._prefix = f"{prefix}rate:"
        self._script = client.register_script(_GCRA)
        self._args = (60.0 / per_minute if per_minute else 0.0, 60.0)

    @property
    def enabled(self) -> bool:
        """Whether requests are limited at all."""
        return self.per_minute > 0

    async def take(self, key: str) -> int:
        """Spend one request of `key`'s allowance: 0 when allowed, else whole seconds until one is."""
        if not self.enabled:
            return 0
        wait_ms = int(await self._script(keys=[self._prefix + key], args=self._args))
        return max(1, math.ceil(wait_ms / 1000)) if wait_ms > 0 else 0


class RedisRevocationNotices:
    """Tells every process of a revocation over one pub/sub channel; each process keeps one subscription."""

    def __init__(self, client: Any, *, prefix: str) -> None:
        self._client = client
        self.channel = f"{prefix}auth:revoked"
        self._task: asyncio.Task[None] | None = None

    async def publish(self) -> None:
        """Announce that this process revoked something (after the database change committed)."""
        await self._client.publish(self.channel, b"1")

    async def start(self, on_notice: Callable[[], None]) -> None:
        """Subscribe (before returning, so no notice published afterwards is missed) and call `on_notice` per notice."""
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self.channel)
        self._task = asyncio.create_task(self._listen(pubsub, on_notice), name="auth-revocation-notices")

    async def _listen(self, pubsub: Any, on_notice: Callable[[], None]) -> None:
        while True:
            try:
                message = await pubsub.get_message(timeout=None)
                if message is not None:
                    on_notice()
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                raise
            except Exception:
                # The connection dropped: whatever was published meanwhile is lost, so drop the caches and resubscribe.
                log.warning("Revocation notices from Redis interrupted; resubscribing", exc_info=True)
                on_notice()
                await asyncio.sleep(_RECONNECT_S)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                    pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                    await pubsub.subscribe(self.channel)

    async def close(self) -> None:
        """Unsubscribe."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
