"""Run commands across server processes: a stop asked of any process is carried out by the one that holds the run.

The command goes out as a notice on the deployment's channel (Redis, PostgreSQL NOTIFY, or this process); every
process hears it and the one whose registry holds the run stops it. The asking process learns the outcome from
the run's event log (its final `status_update`), so nothing depends on the notice being answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from cracktrader.notify import Notices
from cracktrader.runs.event_relay import EventRelay
from cracktrader.runs.events import STATUS_UPDATE
from cracktrader.runs.state import FINISHED

__all__ = ["RunCommands"]

log = logging.getLogger(__name__)

# Stops a process carries out for others: (run_id, flatten) -> its answer; raises when the run is not there.
StopHere = Callable[[str, bool], Awaitable[Any]]
Holds = Callable[[str], bool]


class RunCommands:
    """This process's end of the command channel: send stops, and carry out those for runs it holds."""

    def __init__(self, notices: Notices, relay: EventRelay, *, holds: Holds, stop_here: StopHere) -> None:
        self.notices = notices
        self.relay = relay
        self._holds = holds
        self._stop_here = stop_here
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Listen for commands."""
        await self.notices.start(self._on_notice)

    async def close(self) -> None:
        """Stop listening; stops under way finish."""
        await self.notices.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self, run_id: str, *, flatten: bool, timeout_s: float) -> str | None:
        """Ask the process that holds the run to stop it; its final status, or None if none came within the timeout."""
        sub = await self.relay.subscribe(run_id)  # before the command: its final status cannot come first
        try:
            await self.notices.publish(json.dumps({"stop": run_id, "flatten": flatten}))
            async with asyncio.timeout(timeout_s):
                while (item := await sub.get()) is not None:
                    status = item.event.payload.get("status")
                    if item.event.type == STATUS_UPDATE and status in FINISHED:
                        return str(status)
        except TimeoutError:
            return None
        finally:
            sub.close()
        return None

    def _on_notice(self, payload: str | None) -> None:
        if payload is None:  # commands sent while this listener was away went to nobody here: the sender times out
            return
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            command = json.loads(payload)
            run_id, flatten = command.get("stop"), command.get("flatten", False)
            if isinstance(run_id, str) and isinstance(flatten, bool) and self._holds(run_id):
                task = asyncio.get_running_loop().create_task(self._stop(run_id, flatten))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _stop(self, run_id: str, flatten: bool) -> None:
        try:
            await self._stop_here(run_id, flatten)
        except Exception as exc:  # it ended meanwhile (409) or was never here: the asker reads the log
            log.info("A stop of run %s sent by another process: %s", run_id, exc)
