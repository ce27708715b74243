"""The server's runs by id: backtests in the worker pool, paper sessions as tasks, a runner slot per user."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cracktrader.runs import events, worker
from cracktrader.runs.backtest import validate_backtest
from cracktrader.runs.config import BacktestConfig, record_fields, redact
from cracktrader.runs.document import iso_times, now_iso
from cracktrader.runs.errors import NoActiveRunError, QueueFullError, RunNotFoundError
from cracktrader.runs.lease import ServerLease
from cracktrader.runs.pool import WorkerPool, shared_pool
from cracktrader.runs.rerun import StoredRun
from cracktrader.runs.results import RunResults, empty_results
from cracktrader.runs.slots import Slot
from cracktrader.runs.state import FINISHED, RunState
from cracktrader.runs.worker import Job, JobOutcome
from cracktrader.settings import Settings, get_settings

if TYPE_CHECKING:
    from cracktrader.db.run_store import RunStore
    from cracktrader.runs.sessions import LiveRun, SessionRegistry
    from cracktrader.runs.shared_slots import SharedSlots
    from cracktrader.sweeps.runner import SweepRegistry
    from cracktrader.sweeps.walkforward_runner import WalkForwardRegistry

log = logging.getLogger(__name__)

# How long POST /run/stop waits for a simulating run to reach its next stop check (chunks end within 50 ms).
STOP_WAIT_S = 0.9
# Finished backtests kept in memory (their status; results only while a slot shows them).
KEEP_FINISHED = 200
# Results of finished backtests no slot shows, kept in memory for `/runs/{id}/status/detailed` and `/results`.
KEEP_RESULTS = 4
# How long a finished job's last messages may trail its outcome (they are in flight on the message queue).
END_WAIT_S = 5.0


@dataclass(slots=True)
class BacktestRun:
    """One backtest: its request, its live state and, once it ends, its results."""

    run_id: str
    user_id: int | None
    config: BacktestConfig
    state: RunState
    rerun_of: StoredRun | None = None
    task: asyncio.Task[None] | None = None
    results: RunResults | None = None
    started: bool = False  # a worker picked it up
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # its worker's last message arrived
    started_write: asyncio.Task[None] | None = None
    last_publish: float = 0.0
    handed_back: bool = False  # its executor gave it back to the queue: this attempt records nothing

    @property
    def busy(self) -> bool:
        """Still running or saving."""
        return self.task is not None and not self.task.done()


class RunRegistry:
    """Starts, stops and reports runs by id; `slot(user)` is that user's runner of `/run/*` and `/status`."""

    def __init__(
        self,
        *,
        bus: events.EventBus,
        store: RunStore | None = None,
        settings: Settings | None = None,
        status_throttle_s: float = 0.25,
        pool: WorkerPool | None = None,
    ) -> None:
        self.bus = bus
        self.store = store
        self.settings = settings or get_settings()
        self.throttle_s = status_throttle_s
        self._pool = pool
        self.server_id = uuid.uuid4().hex
        self.lease = ServerLease(store, self.settings, self.server_id)
        self.backtests: dict[str, BacktestRun] = {}
        self._admitting = 0  # backtests past the queue check, not yet in `backtests`
        self.sessions: SessionRegistry | None = None  # the server's paper sessions
        self.shared_slots: SharedSlots | None = None  # slots shared with other processes (the run queue's mode)
        self.sweeps: SweepRegistry | None = None  # the server's sweeps (they share the pool and its limits)
        self.walkforwards: WalkForwardRegistry | None = None  # and its walk-forwards, likewise
        self.slots: dict[int | None, Slot] = {}
        self.outcomes: dict[str, int] = {"completed": 0, "failed": 0, "stopped": 0}
        self._on_finish: list[Any] = []
        self.closed = False
        # Last known reachability per exchange, learned from real runs (health checks never probe on demand).
        self.exchange_status: dict[str, dict[str, Any]] = {}

    @property
    def pool(self) -> WorkerPool:
        """The worker pool (this process's shared one of the configured size, unless one was given)."""
        if self._pool is None:
            self._pool = shared_pool(self.settings.max_concurrent_backtests, self.settings.backtest_niceness)
        return self._pool

    # Lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> int:
        """Bind to the loop, take a server lease, and fail the runs whose server is gone ("interrupted")."""
        self.bus.bind(asyncio.get_running_loop())
        return await self.lease.start()

    async def warm_up(self) -> None:
        """Start the worker processes now (each loads the compiled kernels), so the first run starts at speed."""
        await asyncio.to_thread(self.pool.warm)

    async def close(self) -> None:
        """Stop this server's backtests and wait (up to 5 s) for them to save."""
        for run in self.backtests.values():
            if run.state.active:
                self.pool.stop(run.run_id)
        busy = {r.task for r in self.backtests.values() if r.task is not None and not r.task.done()}
        if busy:
            # Also runs already reported stopped that are still saving: disposing of the database under a save
            # left a connection never returned to the pool.
            await asyncio.wait(busy, timeout=5)
        await self.lease.stop()
        self.closed = True

    def on_finish(self, callback: Any) -> None:
        """Call `callback(outcome, mode)` after each backtest ends (used for metrics)."""
        self._on_finish.append(callback)

    # Slots ---------------------------------------------------------------------------------------------
    def slot(self, user_id: int | None) -> Slot:
        """The runner of `user_id` (None: the local operator with auth off)."""
        slot = self.slots.get(user_id)
        if slot is None:
            slot = self.slots[user_id] = Slot(self, user_id)
        return slot

    def status(self) -> dict[str, Any]:
        """The local operator's `/status` (auth off)."""
        return self.slot(None).status()

    def slot_of(self, run_id: str | None) -> Slot | None:
        """The slot that shows `run_id`, if one does."""
        if run_id is None:
            return None
        for slot in self.slots.values():
            if slot.run_id == run_id:
                return slot
        return None

    # Runs by id ----------------------------------------------------------------------------------------
    def find(self, run_id: str, *, owner: int | None = None) -> BacktestRun | LiveRun:
        """A backtest or session of this server; another user's is not found (`owner` None: everyone's)."""
        run: Any = self.backtests.get(run_id)
        if run is None and self.sessions is not None:
            run = self.sessions.runs.get(run_id)
        if run is None or (owner is not None and run.user_id != owner):
            raise RunNotFoundError(f"No run with id {run_id!r} on this server", details={"run_id": run_id})
        return run

    def owner_of(self, run_id: object) -> tuple[bool, int | None]:
        """(known, user id) of a run of this server."""
        if not isinstance(run_id, str):
            return False, None
        run: Any = self.backtests.get(run_id)
        if run is None and self.sessions is not None:
            run = self.sessions.runs.get(run_id)
        return (False, None) if run is None else (True, run.user_id)

    def holds(self, run_id: str) -> bool:
        """Whether this process runs it: a backtest, a session, or a sweep or walk-forward claimed from the queue."""
        return self.owner_of(run_id)[0] or any(j.holds(run_id) for j in (self.sweeps, self.walkforwards) if j)

    def run_status(self, run_id: str, *, owner: int | None = None) -> dict[str, Any]:
        """`/runs/{id}/status` of a backtest or a session."""
        run = self.find(run_id, owner=owner)
        return run.state.snapshot() if isinstance(run, BacktestRun) else run.snapshot()

    def active_backtests(self) -> list[str]:
        return [r.run_id for r in self.backtests.values() if r.state.active]

    async def stop_run(self, run_id: str, *, owner: int | None = None, flatten: bool = False) -> dict[str, Any]:
        """Stop a backtest (within a second) or a session (within 2 s); 409 NO_ACTIVE_RUN once it ended."""
        run = self.find(run_id, owner=owner)
        if isinstance(run, BacktestRun):
            return await self.stop_backtest(run)
        assert self.sessions is not None
        return await self.sessions.stop(run_id, owner=owner, flatten=flatten)

    # Backtests -----------------------------------------------------------------------------------------
    async def start_backtest(
        self,
        config: BacktestConfig,
        *,
        user_id: int | None = None,
        rerun_of: StoredRun | None = None,
        on_accepted: Callable[[str], None] | None = None,
        reserve: Callable[[str], Awaitable[None]] | None = None,
    ) -> BacktestRun:
        """Validate and accept a backtest; it waits its turn in the pool ("starting", phase "queued").

        `reserve(run_id)` may refuse it before anything is recorded (a shared slot another process filled);
        `on_accepted(run_id)` is called before its first event (a slot points at it, so its streams see that).
        """
        await asyncio.to_thread(validate_backtest, config, settings=self.settings)
        self.admit_job()
        self._admitting += 1
        try:
            return await self._accept_backtest(
                config, user_id=user_id, rerun_of=rerun_of, on_accepted=on_accepted, reserve=reserve
            )
        finally:
            self._admitting -= 1

    def admit_job(self) -> None:
        """Refuse a backtest, sweep or walk-forward when as many run and wait as the settings admit (QUEUE_FULL)."""
        running = self.settings.max_concurrent_backtests
        queued = self.settings.max_queued_backtests
        jobs = sum(j.active for j in (self.sweeps, self.walkforwards) if j is not None)
        active = self._admitting + jobs + sum(1 for r in self.backtests.values() if r.state.active)
        if active >= running + queued:
            raise QueueFullError(
                f"This server runs {running} backtests and has {queued} waiting (CRACKTRADER_MAX_CONCURRENT_BACKTESTS"
                ", CRACKTRADER_MAX_QUEUED_BACKTESTS); try again when one has finished",
                details={"max_concurrent_backtests": running, "max_queued_backtests": queued},
            )

    async def _accept_backtest(
        self,
        config: BacktestConfig,
        *,
        user_id: int | None,
        rerun_of: StoredRun | None,
        on_accepted: Callable[[str], None] | None,
        reserve: Callable[[str], Awaitable[None]] | None = None,
    ) -> BacktestRun:
        """Record an admitted backtest and start its task (it waits its turn in the pool)."""
        run = self._new_backtest(uuid.uuid4().hex, config, user_id=user_id, rerun_of=rerun_of)
        if reserve is not None:
            await reserve(run.run_id)
        if self.store is not None:
            await self.store.create(
                run_id=run.run_id,
                mode="backtest",
                status="starting",
                config=run.state.config or {},
                **record_fields(config),
                user_id=user_id,
                server_id=self.server_id,
                rerun_of=rerun_of.run_id if rerun_of is not None else None,
            )
        self._launch(run, on_accepted)
        return run

    async def execute_claimed(self, run_id: str, config: BacktestConfig, *, user_id: int | None) -> str:
        """Run a backtest an executor claimed from the queue (its row exists) to its end; its final status."""
        run = self._new_backtest(run_id, config, user_id=user_id, rerun_of=None)
        self._launch(run, None)
        assert run.task is not None
        try:
            await asyncio.shield(run.task)
        except asyncio.CancelledError:
            # Handed back to the queue (a drain ran out of time): another executor runs it, so nothing of this
            # attempt may reach its row or its stream.
            run.handed_back = True
            self.pool.stop(run_id)
            raise
        return run.state.status

    def _new_backtest(
        self, run_id: str, config: BacktestConfig, *, user_id: int | None, rerun_of: StoredRun | None
    ) -> BacktestRun:
        cfg = redact(config.model_dump())
        state = RunState(
            run_id=run_id,
            status="starting",
            mode="backtest",
            config=cfg,
            start_time=now_iso(),
            started_at=time.monotonic(),
            initial_cash=config.initial_cash,
            cash=config.initial_cash,
            value=config.initial_cash,
            phase="queued",
        )
        return BacktestRun(run_id, user_id, config, state, rerun_of)

    def _launch(self, run: BacktestRun, on_accepted: Callable[[str], None] | None) -> None:
        self.backtests[run.run_id] = run
        self._forget_old()
        if on_accepted is not None:
            on_accepted(run.run_id)
        self._publish_status(run, force=True)
        run.task = asyncio.create_task(self._run(run), name=f"run-{run.run_id}")

    async def stop_backtest(self, run: BacktestRun) -> dict[str, Any]:
        """Ask a backtest to stop; waits up to a second for it to wind down."""
        st = run.state
        if not st.active:
            raise NoActiveRunError(f"No run is active (status: {st.status})", details={"status": st.status})
        phase = st.phase or ""
        if phase == "saving":
            return {
                "run_id": run.run_id,
                "status": st.status,
                "message": "The simulation had already finished; its results are being saved and it will complete",
            }
        self.pool.stop(run.run_id)
        if phase == "queued" or phase.startswith("loading_data"):
            # The worker may be inside a network call for seconds (a page, an exchange's market list): it gives up
            # at its next check, and a run stopped before simulating has no results to wait for.
            self._announce_stopped(run)
            return {"run_id": run.run_id, "status": "stopped", "message": "Run stopped while loading data"}
        # The worker checks the flag between chunks (a few ms, 50 ms at most): wait for it, under a second.
        deadline = time.monotonic() + STOP_WAIT_S
        while st.active and time.monotonic() < deadline and run.busy:
            await asyncio.sleep(0.01)
        message = "Run stopped" if st.status == "stopped" else f"Stop requested; run is {st.status}"
        return {"run_id": run.run_id, "status": st.status, "message": message}

    async def settle(self, run_id: str | None) -> None:
        """Wait until a stopped or finished backtest has finished saving."""
        run = self.backtests.get(run_id) if run_id is not None else None
        if run is not None and run.busy and not run.state.active:
            assert run.task is not None
            await asyncio.wait({run.task}, timeout=120)

    def memory_results(self, run_id: str) -> RunResults | None:
        """Results held in memory: a session's so far, a backtest's while it runs or saves, or a slot's last."""
        if self.sessions is not None and run_id in self.sessions.runs:
            return self.sessions.runs[run_id].current_results()
        run = self.backtests.get(run_id)
        if run is None:
            return None
        if run.results is not None:
            return run.results
        st = run.state
        if st.active or run.busy:
            return empty_results(run_id=run_id, config=st.config, status=st.status, start_time=st.start_time)
        return None

    def forget(self, run_id: str) -> None:
        """Drop a deleted run from memory (an ended session's too)."""
        self.backtests.pop(run_id, None)
        session = self.sessions.runs.get(run_id) if self.sessions is not None else None
        if session is not None and not session.active and (session.task is None or session.task.done()):
            assert self.sessions is not None
            self.sessions.runs.pop(run_id, None)
        for slot in self.slots.values():
            slot.forget(run_id)

    def release(self, run_id: str | None = None) -> None:
        """Drop finished backtests' results from memory (the store has them), but those a slot shows and the
        KEEP_RESULTS newest others."""
        if self.store is None:
            return
        shown = {i for s in self.slots.values() for i in (s.run_id, s.last_run_id) if i is not None}
        held = [r for r in self.backtests.values() if r.results is not None and not r.busy and r.run_id not in shown]
        held.sort(key=lambda r: r.state.ended_at or 0.0)
        for run in held[: max(0, len(held) - KEEP_RESULTS)]:
            run.results = None

    def _forget_old(self) -> None:
        finished = [r for r in self.backtests.values() if not r.busy and not r.state.active]
        for run in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            if self.slot_of(run.run_id) is None:
                self.backtests.pop(run.run_id, None)

    # Execution -----------------------------------------------------------------------------------------
    async def _run(self, run: BacktestRun) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[JobOutcome] = loop.create_future()

        def call(fn: Any, *args: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed (the app shut down under the run)
                loop.call_soon_threadsafe(fn, *args)

        def resolve(outcome: JobOutcome) -> None:
            if not done.done():
                done.set_result(outcome)

        st = run.state
        job = Job(run.run_id, run.config, self.settings, st.start_time or now_iso(), self.throttle_s, run.rerun_of)
        if st.status == "stopped":  # stopped before it reached the pool
            resolve(JobOutcome("stopped"))
        else:
            self.pool.submit(
                job,
                lambda kind, payload: call(self._on_message, run, kind, payload),
                lambda outcome: call(resolve, outcome),
            )
        outcome = await done
        if outcome.from_worker:  # its last messages may still be in flight: apply them first
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.ended.wait(), END_WAIT_S)
        if run.started_write is not None:
            await asyncio.gather(run.started_write, return_exceptions=True)
        await self._finish(run, outcome)

    def _on_message(self, run: BacktestRun, kind: str, payload: dict[str, Any]) -> None:
        """Apply a worker message to the run's state and publish what it changed (on the loop thread)."""
        st = run.state
        if kind == worker.END:
            run.ended.set()
            return
        if run.handed_back:  # another executor runs it now: its stream hears that attempt only, never this one
            return
        if kind == worker.EXCHANGE:
            self._record_exchange(payload["exchange"], payload["ok"], payload["detail"])
            return
        if kind == worker.STARTED:
            run.started = True
            log.info("Run %s started", run.run_id)
            if self.store is not None and st.status not in FINISHED:
                run.started_write = asyncio.create_task(self._mark_running(run.run_id))
        if st.status == "stopped":  # announced stopped: nothing the worker still says brings it back
            return
        if kind == worker.STARTED:
            st.status, st.phase = "running", "loading_data"
            self._publish_status(run, force=True)
        elif kind == worker.PHASE:
            if "bars_total" in payload:
                st.bars_total = payload["bars_total"]
            if "config" in payload:
                st.config = payload["config"]
            changed = st.phase != payload["phase"]
            st.phase = payload["phase"]
            self._publish_status(run, force=changed)
        elif kind == worker.PROGRESS:
            st.bars_processed, st.bars_total = payload["done"], payload["total"]
            st.cash, st.value = payload["cash"], payload["value"]
            if payload["sample"]:
                st.equity_samples.append(payload["point"])
            if payload["publish"] and self._publish_status(run, force=True):
                self.bus.publish(events.Event(events.EQUITY_UPDATE, {"run_id": run.run_id, **payload["point"]}))
        elif kind == worker.ORDERS:
            st.trade_count = payload["trade_count"]
            st.recent_orders.extend(payload["orders"])
            st.recent_trades.extend(payload["trades"])
            if payload["publish"]:
                if payload["trades"]:
                    trade = {**payload["trades"][-1], "fills_since_last_event": payload["fills_since_last_event"]}
                    self.bus.publish(events.Event(events.TRADE_EXECUTION, {"run_id": run.run_id, **trade}))
                if payload["orders"]:
                    order = {**payload["orders"][-1], "orders_since_last_event": payload["orders_since_last_event"]}
                    self.bus.publish(events.Event(events.ORDER_UPDATE, {"run_id": run.run_id, **order}))
        elif kind == worker.STOPPED:
            self._announce_stopped(run)

    async def _mark_running(self, run_id: str) -> None:
        assert self.store is not None
        try:
            await self.store.update_status(run_id, status="running", started_at=datetime.now(UTC))
        except Exception:
            log.warning("Could not record run %s as running", run_id, exc_info=True)

    async def _finish(self, run: BacktestRun, outcome: JobOutcome) -> None:
        """Save the outcome, then announce it: a client that sees "completed" can read the history."""
        st, run_id = run.state, run.run_id
        if run.handed_back:
            st.status, st.phase = "stopped", None
            return
        status, error, error_code = outcome.status, outcome.error, outcome.error_code
        if outcome.exchange_unreachable and error is not None:
            self._record_exchange(run.config.exchange, False, error)
        end_time = now_iso()
        results = outcome.results
        if results is None:
            results = empty_results(
                run_id=run_id,
                config=st.config,
                status=status,
                start_time=st.start_time,
                end_time=end_time,
                initial_cash=run.config.initial_cash,
                error=error,
            )
        results.head.update(end_time=end_time, status=status, error=error)
        if status == "stopped" and st.status != "stopped":
            self._announce_stopped(run)
        run.results = results  # served from memory while it saves
        if self.store is not None:
            try:
                await self.store.save_results(
                    run_id, results=results, status=status, ended_at=datetime.now(UTC), error=error
                )
            except Exception:
                log.exception("Could not save results of run %s", run_id)
        st.end_time, st.ended_at, st.phase = end_time, time.monotonic(), None
        st.error, st.error_code = error, error_code
        if status == "completed" and results.equity.shape[0]:
            # From the results, not the worker's last progress and orders messages: under load they can come after
            # the outcome (past END_WAIT_S), and a completed run must not show 0 bars processed or 0 trades.
            last = results.equity[-1]
            st.bars_processed = st.bars_total = int(results.equity.shape[0])
            st.cash, st.value = float(last["cash"]), float(last["value"])
            st.trade_count = results.n_fills
        st.status = status
        self.outcomes[status] = self.outcomes.get(status, 0) + 1
        if status == "failed":
            log.warning("Run %s failed: %s", run_id, error)
        else:
            log.info("Run %s %s", run_id, status)
        if error is not None:
            payload = {"run_id": run_id, "code": error_code, "message": error, "details": outcome.error_details}
            self.bus.publish(events.Event(events.ERROR, payload))
        for callback in self._on_finish:
            callback(status, "backtest")
        if results.equity.shape[0]:
            # Progress events are throttled, so a short run may not have sent any equity point: send the last one.
            last = results.equity[-1]
            final = {
                "run_id": run_id,
                "bar": int(results.equity.shape[0]),
                "timestamp": iso_times(results.equity["ts"][-1:])[0],
                "value": float(last["value"]),
                "cash": float(last["cash"]),
                "pnl": float(last["value"]) - run.config.initial_cash,
            }
            self.bus.publish(events.Event(events.EQUITY_UPDATE, final))
        self._publish_status(run, force=True)
        await self.lease.prune()
        # A task's own `busy` is still true here: release once it has ended.
        asyncio.get_running_loop().call_soon(self.release, run_id)

    def _record_exchange(self, exchange: str, ok: bool, detail: str) -> None:
        self.exchange_status[exchange] = {"reachable": ok, "checked_at": now_iso(), "detail": detail[:200]}

    def _announce_stopped(self, run: BacktestRun) -> None:
        """Report the run stopped now; it saves what it has next ("saving"), then its phase clears."""
        st = run.state
        if st.status == "stopped":
            return
        st.status, st.end_time, st.ended_at, st.phase = "stopped", now_iso(), time.monotonic(), "saving"
        self._publish_status(run, force=True)

    def _publish_status(self, run: BacktestRun, *, force: bool = False) -> bool:
        """Publish a status_update on lifecycle changes, and at most every `throttle_s` while progressing."""
        now = time.monotonic()
        if not force and now - run.last_publish < self.throttle_s:
            return False
        run.last_publish = now
        self.bus.publish(events.Event(events.STATUS_UPDATE, run.state.snapshot(), user_id=run.user_id))
        return True

    def publish_idle(self, user_id: int | None) -> None:
        """A slot's status_update after a reset."""
        self.bus.publish(events.Event(events.STATUS_UPDATE, RunState().snapshot(), user_id=user_id))
