"""A virtual clock for tests: time moves only when the test moves it, never with the wall clock."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass

# Called with (old_ms, new_ms) in the thread that moved the clock, after the move.
ClockListener = Callable[[int, int], None]


@dataclass(slots=True)
class _Sleeper:
    deadline_ms: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


class VirtualClock:
    """Epoch milliseconds that change only through `advance` and `set`; thread-safe.

    The fake venue listens to it to push what becomes due, and a runtime under test can read it
    (`now_ms()`, `time()`) and wait on it (`await sleep_until(ms)`, `await sleep(s)`): it satisfies
    `cracktrader.clock.Clock`, so timeouts and stale-data timers fire when the test says. Unlike
    `ManualClock` it may be moved from any thread (the venue serves from its own).
    """

    def __init__(self, now_ms: int) -> None:
        self._now_ms = int(now_ms)
        self._lock = threading.Lock()
        self._listeners: list[ClockListener] = []
        self._sleepers: list[_Sleeper] = []

    def now_ms(self) -> int:
        """The current virtual time in epoch milliseconds."""
        return self._now_ms

    def time(self) -> float:
        """The current virtual time in epoch seconds, like `time.time()`."""
        return self._now_ms / 1000

    def advance(self, seconds: float) -> int:
        """Move forward by `seconds` (rounded to whole ms); returns the new time in ms."""
        if seconds < 0:
            raise ValueError(f"a virtual clock only moves forward; got advance({seconds})")
        return self.set(self._now_ms + round(seconds * 1000))

    def set(self, ms: int) -> int:
        """Move to epoch `ms` (not backwards); returns it. Listeners and due sleepers run before it returns."""
        with self._lock:
            old = self._now_ms
            if ms < old:
                raise ValueError(f"a virtual clock only moves forward; now {old}, asked for {ms}")
            self._now_ms = int(ms)
            listeners = list(self._listeners)
            due = [s for s in self._sleepers if s.deadline_ms <= ms]
            self._sleepers = [s for s in self._sleepers if s.deadline_ms > ms]
        if ms != old:
            for listener in listeners:
                listener(old, int(ms))
        for sleeper in due:
            sleeper.loop.call_soon_threadsafe(_wake, sleeper.future)
        return int(ms)

    def subscribe(self, listener: ClockListener) -> None:
        """Call `listener(old_ms, new_ms)` after every move."""
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: ClockListener) -> None:
        """Stop calling `listener`."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    async def sleep_until(self, when_ms: int) -> None:
        """Return once the virtual clock reaches `when_ms` (at once if it already has)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._now_ms >= when_ms:
                return
            self._sleepers.append(_Sleeper(int(when_ms), loop, future))
        try:
            await future
        finally:
            with self._lock:
                self._sleepers = [s for s in self._sleepers if s.future is not future]

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of virtual time (that is, until a test advances the clock that far)."""
        await self.sleep_until(self._now_ms + round(seconds * 1000))

    def sleepers(self) -> int:
        """How many coroutines are waiting on the clock (a test can wait for a runtime to arm its timer)."""
        with self._lock:
            return len(self._sleepers)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
