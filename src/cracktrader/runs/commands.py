"""Run commands across server processes: a command asked of any process is carried out by the one that holds the run.

The command goes out as a notice on the deployment's channel (Redis, PostgreSQL NOTIFY, or this process); every
process hears it and the one whose registry holds the run carries it out. A stop's outcome is read from the
run's event log (its final `status_update`), so nothing depends on the notice being answered. The other commands
(a session's pause, resume, order cancel, position close) are answered with a reply notice naming the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from cracktrader.errors import CracktraderError
from cracktrader.notify import NOTICE_MAX_BYTES, Notices
from cracktrader.runs.event_relay import EventRelay
from cracktrader.runs.events import STATUS_UPDATE
from cracktrader.runs.state import FINISHED

if TYPE_CHECKING:
    from cracktrader.runs.registry import RunRegistry

__all__ = ["RunCommands"]

log = logging.getLogger(__name__)

# Stops a process carries out for others: (run_id, flatten) -> its answer; raises when the run is not there.
StopHere = Callable[[str, bool], Awaitable[Any]]
Holds = Callable[[str], bool]
# Other commands a process answers for the runs it holds: (run_id, arguments) -> the answer (a small document).
CallHere = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


def forwarded_error(error: dict[str, Any]) -> CracktraderError:
    """The error the holding process answered, with its code and status."""
    code, status = str(error.get("code") or "INTERNAL_ERROR"), int(error.get("status_code") or 500)
    cls = type("ForwardedError", (CracktraderError,), {"code": code, "status_code": status})
    forwarded: CracktraderError = cls(str(error.get("message") or code), details=dict(error.get("details") or {}))
    return forwarded


class RunCommands:
    """This process's end of the command channel: send stops, and carry out those for runs it holds."""

    def __init__(
        self,
        notices: Notices,
        relay: EventRelay,
        *,
        holds: Holds,
        stop_here: StopHere,
        calls: Mapping[str, CallHere] | None = None,
    ) -> None:
        self.notices = notices
        self.relay = relay
        self._holds = holds
        self._stop_here = stop_here
        self._calls = dict(calls or {})
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    def for_registry(
        cls, notices: Notices, relay: EventRelay, registry: RunRegistry, calls: Mapping[str, CallHere] | None = None
    ) -> RunCommands:
        """The commands a process carries out for the runs its registry holds (its sweeps' and walk-forwards' too)."""

        async def cancel_sweep(run_id: str, args: dict[str, Any]) -> dict[str, Any]:
            assert registry.sweeps is not None  # it holds the job, so it has the registry
            return await registry.sweeps.cancel_here(run_id, args)

        async def cancel_walkforward(run_id: str, args: dict[str, Any]) -> dict[str, Any]:
            assert registry.walkforwards is not None
            return await registry.walkforwards.cancel_here(run_id, args)

        return cls(
            notices,
            relay,
            holds=registry.holds,
            stop_here=lambda run_id, flatten: registry.stop_run(run_id, flatten=flatten),
            calls={"cancel_sweep": cancel_sweep, "cancel_walkforward": cancel_walkforward, **(calls or {})},
        )

    def serve(self, holds: Holds, calls: Mapping[str, CallHere]) -> None:
        """Also answer `calls` for the ids `holds` says this process has (jobs other than runs: downloads)."""
        runs_held = self._holds
        self._holds = lambda job_id: runs_held(job_id) or holds(job_id)
        self._calls.update(calls)

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

    async def call(self, run_id: str, name: str, args: dict[str, Any], *, timeout_s: float) -> dict[str, Any] | None:
        """Have the process that holds the run carry out `name`; its answer (its error raised), or None when no
        process answered within the timeout."""
        request_id = uuid.uuid4().hex
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = reply
        try:
            await self.notices.publish(json.dumps({"call": name, "run_id": run_id, "args": args, "id": request_id}))
            async with asyncio.timeout(timeout_s):
                answer = await reply
        except TimeoutError:
            return None
        finally:
            self._replies.pop(request_id, None)
        if "error" in answer:
            raise forwarded_error(answer["error"])
        body: dict[str, Any] = answer["body"]
        return body

    def _on_notice(self, payload: str | None) -> None:
        if payload is None:  # commands sent while this listener was away went to nobody here: the sender times out
            return
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            command = json.loads(payload)
            if "reply" in command:
                reply = self._replies.get(command["reply"])
                if reply is not None and not reply.done():
                    reply.set_result(command)
                return
            if "call" in command:
                self._on_call(command)
                return
            run_id, flatten = command.get("stop"), command.get("flatten", False)
            if isinstance(run_id, str) and isinstance(flatten, bool) and self._holds(run_id):
                self._spawn(self._stop(run_id, flatten))

    def _on_call(self, command: dict[str, Any]) -> None:
        handler = self._calls.get(command["call"])
        run_id, args, request_id = command.get("run_id"), command.get("args"), command.get("id")
        if not (isinstance(run_id, str) and isinstance(args, dict) and isinstance(request_id, str)):
            return
        if handler is not None and self._holds(run_id):
            self._spawn(self._answer(handler, run_id, args, request_id))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, handler: CallHere, run_id: str, args: dict[str, Any], request_id: str) -> None:
        try:
            answer: dict[str, Any] = {"reply": request_id, "body": await handler(run_id, args)}
        except CracktraderError as exc:
            answer = {"reply": request_id, "error": {**exc.to_dict(), "status_code": exc.status_code}}
        except Exception as exc:
            log.exception("A command for run %s sent by another process failed", run_id)
            answer = {"reply": request_id, "error": {"code": "INTERNAL_ERROR", "message": type(exc).__name__}}
        text = json.dumps(answer, default=str)
        if len(text.encode()) > NOTICE_MAX_BYTES:
            text = json.dumps({"reply": request_id, "body": {"run_id": run_id, "message": "done"}})
        await self.notices.publish(text)

    async def _stop(self, run_id: str, flatten: bool) -> None:
        try:
            await self._stop_here(run_id, flatten)
        except Exception as exc:  # it ended meanwhile (409) or was never here: the asker reads the log
            log.info("A stop of run %s sent by another process: %s", run_id, exc)
