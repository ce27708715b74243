"""A user's runner slot (seed 003's "the runner"): a pointer to one run of the registry, with today's 409 rules."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from cracktrader.runs.config import BacktestConfig, LiveConfig
from cracktrader.runs.errors import NoActiveRunError, RunAlreadyActiveError, RunNotResettableError
from cracktrader.runs.rerun import StoredRun
from cracktrader.runs.results import RunResults
from cracktrader.runs.state import FINISHED, RunState

if TYPE_CHECKING:
    from cracktrader.runs.registry import RunRegistry

IDLE = RunState()


class Slot:
    """`/run/*`, `/status` and `/results` of one user: idle, or showing their current (or finished) run."""

    def __init__(self, registry: RunRegistry, user_id: int | None) -> None:
        self.registry = registry
        self.user_id = user_id
        self.run_id: str | None = None  # the run the slot shows
        self.last_run_id: str | None = None  # the run it showed before a reset (`/results` still shows it)
        self._lock = asyncio.Lock()

    # Reading -------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The `/status` document: the run's (a backtest's, or a session's with what a session adds), or idle."""
        run = self._run()
        if run is None:
            shared = self.registry.shared_slots
            remote = shared.remote_status(self.run_id) if shared is not None and self.run_id is not None else None
            return remote if remote is not None else IDLE.snapshot()
        return run.state.snapshot() if hasattr(run, "state") else run.snapshot()

    @property
    def state(self) -> RunState:
        """The backtest's live state (idle for an empty slot or a session)."""
        run = self._run()
        return run.state if run is not None and hasattr(run, "state") else IDLE

    @property
    def status_value(self) -> str:
        return str(self.status()["status"]) if self.run_id is not None else "idle"

    @property
    def active(self) -> bool:
        return self.status_value in ("starting", "running")

    def is_session(self) -> bool:
        sessions = self.registry.sessions
        return self.run_id is not None and sessions is not None and sessions.is_session(self.run_id)

    def results_run_id(self) -> str | None:
        """The run `GET /results` shows: the current one, else the one before the last reset."""
        return self.run_id or self.last_run_id

    def owns(self, run_id: str | None) -> bool:
        """Whether `run_id` is one this slot has shown (its results are the user's)."""
        return run_id is not None and run_id in (self.run_id, self.last_run_id)

    def memory_results(self, run_id: str) -> RunResults | None:
        return self.registry.memory_results(run_id)

    def current(self) -> Any:
        """The slot's run (a BacktestRun or a session's LiveRun), None when idle."""
        return self._run()

    def _run(self) -> Any:
        if self.run_id is None:
            return None
        try:
            return self.registry.find(self.run_id)
        except Exception:  # deleted meanwhile
            return None

    # Commands ------------------------------------------------------------------------------------------
    async def _sync(self) -> None:
        """With shared slots, the pointer as the database has it now (another process may have changed it)."""
        if self.registry.shared_slots is not None:
            await self.registry.shared_slots.refresh(self)

    async def _reserve(self, run_id: str) -> None:
        """With shared slots, take the slot in the database for `run_id`; 409 if another process took it first."""
        shared = self.registry.shared_slots
        if shared is not None and not await shared.fill(self, run_id):
            self._require_idle()
            raise RunAlreadyActiveError("Runner is not idle.", details={"status": self.status_value})

    async def start_backtest(self, config: BacktestConfig, *, rerun_of: StoredRun | None = None) -> dict[str, Any]:
        """Accept a backtest into this slot; 409 RUN_ALREADY_ACTIVE unless it is idle."""
        async with self._lock:
            await self._sync()
            self._require_idle()
            run = await self.registry.start_backtest(
                config, user_id=self.user_id, rerun_of=rerun_of, on_accepted=self._point, reserve=self._reserve
            )
        return {"run_id": run.run_id, "status": "starting", "message": "Backtest accepted; poll /status or stream it"}

    async def start_live(self, config: LiveConfig) -> dict[str, Any]:
        """Start a paper or live session in this slot."""
        async with self._lock:
            await self._sync()
            self._require_idle()
            sessions = self.registry.sessions
            assert sessions is not None
            started = await sessions.start(config, user_id=self.user_id)
            try:
                await self._reserve(started["run_id"])
            except RunAlreadyActiveError:
                # Another process filled the slot while this session started: it must not run beside that one.
                await sessions.stop(started["run_id"])
                raise
            self._point(started["run_id"])
        kind = "Live" if config.mode == "live" else "Paper"
        return {**started, "message": f"{kind} session started; watch /status or stream /ws/status"}

    async def stop(self, *, flatten: bool = False) -> dict[str, Any]:
        """Stop the slot's run; 409 NO_ACTIVE_RUN when none is active (a session still stopping answers 200)."""
        await self._sync()
        if self.run_id is None or not (self.active or self._stopping_session()):
            status = self.status_value
            raise NoActiveRunError(f"No run is active (status: {status})", details={"status": status})
        shared = self.registry.shared_slots
        if shared is not None and self._run() is None:  # another process holds it
            return await shared.stop_elsewhere(self.run_id, flatten)
        return await self.registry.stop_run(self.run_id, flatten=flatten)

    def _stopping_session(self) -> bool:
        if not self.is_session():
            return False
        assert self.registry.sessions is not None and self.run_id is not None
        run = self.registry.sessions.runs[self.run_id]
        return run.task is not None and not run.task.done()

    async def reset(self) -> dict[str, Any]:
        """Return to idle from a finished run; refused while a run is active."""
        async with self._lock:
            await self._sync()
            if self.active:
                raise RunNotResettableError(
                    f"Cannot reset while a run is {self.status_value}; stop it first",
                    details={"status": self.status_value, "run_id": self.run_id},
                )
            # A stopped run may still be saving: finish that first, so nothing of it outlives the reset.
            await self.registry.settle(self.run_id)
            previous, older = self.run_id, self.last_run_id
            shared = self.registry.shared_slots
            if previous is not None and shared is not None and not await shared.empty(self, previous):
                await self._sync()  # another process reset it, or filled it again, meanwhile: as it is now
                return {"run_id": previous, "status": self.status_value, "message": "The runner changed meanwhile"}
            if previous is not None:
                self.run_id, self.last_run_id = None, previous
                if older is not None and older != previous:
                    self.registry.release(older)
            self.registry.publish_idle(self.user_id)
        return {"run_id": previous, "status": "idle", "message": "Runner reset to idle"}

    def forget(self, run_id: str) -> None:
        """A deleted run: the slot no longer shows it."""
        if self.run_id == run_id:
            self.run_id = None
        if self.last_run_id == run_id:
            self.last_run_id = None

    def show(self, run_id: str | None, last_run_id: str | None) -> None:
        """Take the pointer the database has (shared slots); results no slot shows any more are released."""
        previous = (self.run_id, self.last_run_id)
        self.run_id, self.last_run_id = run_id, last_run_id
        for old in previous:
            if old is not None and old not in (run_id, last_run_id):
                self.registry.release(old)

    def _point(self, run_id: str | None) -> None:
        previous = (self.run_id, self.last_run_id)
        if run_id is not None:
            self.last_run_id = None
        self.run_id = run_id
        for old in previous:
            if old is not None and old != run_id:
                self.registry.release(old)

    def _require_idle(self) -> None:
        status = self.status_value
        if self.run_id is not None:
            hint = " Reset it with DELETE /api/v1/run/reset." if status in FINISHED else ""
            raise RunAlreadyActiveError(
                f"Runner is not idle. Current status: {status}.{hint}",
                details={"status": status, "run_id": self.run_id},
            )
