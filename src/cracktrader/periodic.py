"""A coroutine repeated on an interval, stopped between runs rather than cancelled in the middle of one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

# Cancelling a task inside a database call can leave its pooled connection never returned (SQLAlchemy then warns
# when the garbage collector finds it, long after); so `stop` lets the current run end and cancels only after this.
STOP_GRACE_S = 5.0


class Periodic:
    """Runs `work()` every `interval_s` seconds in a background task until `stop()`."""

    def __init__(self, work: Callable[[], Awaitable[None]], interval_s: float, *, name: str) -> None:
        self._work = work
        self._interval_s = interval_s
        self._name = name
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin; the first run is one interval from now."""
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=self._name)

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._interval_s)
            if self._stopping.is_set():
                return
            await self._work()

    async def stop(self) -> None:
        """Let a run in progress finish (up to STOP_GRACE_S), then end the task."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        done, _ = await asyncio.wait({task}, timeout=STOP_GRACE_S)
        if not done:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
