"""Time for the live runtime, injected so that tests never wait in real time."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """What the live runtime reads time from."""

    def now_ms(self) -> int:
        """Milliseconds since the epoch."""
        ...

    async def sleep_until(self, when_ms: int) -> None:
        """Return once `now_ms()` has reached `when_ms`."""
        ...


class SystemClock:
    """The wall clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep_until(self, when_ms: int) -> None:
        delay = (when_ms - self.now_ms()) / 1000
        # Under a millisecond is now: a timer that short still costs the event loop 1-4 ms (a fast replay
        # spent 3.6 ms a bar in it), so only yield.
        await asyncio.sleep(delay if delay >= 0.001 else 0)


class ManualClock:
    """A clock that moves only when told: `advance()` by the test, or at once on every sleep (`auto=True`)."""

    def __init__(self, now_ms: int, *, auto: bool = False) -> None:
        self._now = now_ms
        self._auto = auto
        self._moved = asyncio.Condition()

    def now_ms(self) -> int:
        return self._now

    async def sleep_until(self, when_ms: int) -> None:
        if self._auto:
            self._now = max(self._now, when_ms)
            await asyncio.sleep(0)  # still a suspension point, as a real sleep is
            return
        async with self._moved:
            await self._moved.wait_for(lambda: self._now >= when_ms)

    async def advance(self, ms: int) -> None:
        """Move time forward, wake every sleeper whose time has come, and let them run a few scheduling rounds."""
        self._now += ms
        async with self._moved:
            self._moved.notify_all()
        for _ in range(SETTLE_ROUNDS):
            await asyncio.sleep(0)


# Scheduling rounds `advance` yields for: enough for a woken feed to hand its bar through a queue or two.
SETTLE_ROUNDS = 10
