"""The run manager: one active run at a time, executed off the event loop, persisted, and streamed as events."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from types import EllipsisType
from typing import TYPE_CHECKING, Any

import numpy as np

from cracktrader.engine.records import O_STATUS, STATUS_FILLED
from cracktrader.errors import CracktraderError, ExchangeUnreachableError
from cracktrader.periodic import Periodic
from cracktrader.runs import events
from cracktrader.runs.backtest import (
    PreparedBacktest,
    document_config,
    prepare_backtest,
    run_prepared,
    validate_backtest,
)
from cracktrader.runs.config import BacktestConfig, LiveConfig, record_fields, redact
from cracktrader.runs.document import iso_times, now_iso, order_rows_to_dicts
from cracktrader.runs.errors import (
    NoActiveRunError,
    NotImplementedYetError,
    RunAlreadyActiveError,
    RunNotResettableError,
    RunStoppedError,
)
from cracktrader.runs.rerun import RunOutcome, StoredRun, compare_runs
from cracktrader.runs.results import RunResults, empty_results, from_backtest
from cracktrader.runs.state import FINISHED, RunState
from cracktrader.settings import Settings, get_settings

if TYPE_CHECKING:
    from cracktrader.db.run_store import RunStore

log = logging.getLogger(__name__)

EQUITY_SAMPLES = 500
RECENT = 50  # orders and fills /status/detailed shows while a run is going
# How long POST /run/stop waits for a simulating run to reach its next stop check (chunks end within 50 ms).
STOP_WAIT_S = 0.9
HOST = socket.gethostname()


def _pid_alive(pid: int) -> bool:
    """Whether a process with that id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunManager:
    """Starts, stops and resets runs, and keeps the state `/status` and the streams report."""

    def __init__(
        self,
        *,
        bus: events.EventBus,
        store: RunStore | None = None,
        settings: Settings | None = None,
        status_throttle_s: float = 0.25,
    ) -> None:
        self.bus = bus
        self.store = store
        self.settings = settings or get_settings()
        self.throttle_s = status_throttle_s
        self.state = RunState()
        # The results of the most recent run, in columnar form (a 1 M-bar run is ~24 MB), until the next one ends.
        self.last_results: RunResults | None = None
        self.server_id = uuid.uuid4().hex
        self._heartbeat: Periodic | None = None
        self.sessions: Any = None  # the server's paper sessions (runs.sessions.SessionRegistry), for their results
        self.outcomes: dict[str, int] = {"completed": 0, "failed": 0, "stopped": 0}
        self._lock = asyncio.Lock()
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cracktrader-run")
        self._last_status_publish = 0.0
        self._on_finish: list[Any] = []
        self.closed = False
        # Last known reachability per exchange, learned from real runs (health checks never probe on demand).
        self.exchange_status: dict[str, dict[str, Any]] = {}

    # Lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> int:
        """Bind to the loop, take a server lease, and fail the runs whose server is gone ("interrupted")."""
        self.bus.bind(asyncio.get_running_loop())
        if self.store is None:
            return 0
        await self.store.register_server(self.server_id, host=HOST, pid=os.getpid(), now=datetime.now(UTC))
        interrupted = await self._sweep()
        await self._prune()
        self._heartbeat = Periodic(self._beat, self.settings.server_heartbeat_s, name="cracktrader-lease")
        self._heartbeat.start()
        return interrupted

    async def _sweep(self) -> int:
        assert self.store is not None
        return await self.store.mark_interrupted(
            now=datetime.now(UTC),
            server_id=self.server_id,
            lease_ttl=timedelta(seconds=self.settings.server_lease_ttl_s),
            host=HOST,
            is_alive=_pid_alive,
        )

    async def _beat(self) -> None:
        """Renew the lease, and fail runs of servers whose lease lapsed (every `server_heartbeat_s`)."""
        try:
            assert self.store is not None
            await self.store.heartbeat(self.server_id, now=datetime.now(UTC))
            await self._sweep()
        except Exception:  # the database may be briefly away; the next beat tries again
            log.warning("Could not renew the server lease", exc_info=True)

    async def _prune(self) -> None:
        """Apply the retention settings (never to live-trading records)."""
        days, count = self.settings.run_retention_days, self.settings.run_retention_count
        if self.store is None or not (days or count):
            return
        try:
            removed = await self.store.prune(
                now=datetime.now(UTC), max_age=timedelta(days=days) if days else None, max_count=count or None
            )
        except Exception:
            log.warning("Could not apply run retention", exc_info=True)
            return
        if removed:
            log.info("Retention removed %d old runs", removed)

    async def warm_up(self) -> None:
        """Load the compiled kernels in the worker thread now, so the first real run starts at full speed."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, _warm_kernels)

    async def close(self) -> None:
        """Stop the active run and release the worker thread."""
        if self.state.active:
            self._stop.set()
        if self._task is not None and not self._task.done():
            # Also a run already reported stopped that is still saving: disposing of the database under its save
            # left a connection never returned to the pool (SQLAlchemy's GC warning in the suite).
            await asyncio.wait({self._task}, timeout=5)
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._heartbeat is not None:
            await self._heartbeat.stop()  # a beat in progress finishes: cancelling it could strand its connection
            if self.store is not None:
                try:
                    await self.store.release_server(self.server_id)
                except Exception:
                    log.warning("Could not release the server lease", exc_info=True)
        self.closed = True

    def status(self) -> dict[str, Any]:
        """The `/status` document; never touches the database."""
        return self.state.snapshot()

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    # Commands ------------------------------------------------------------------------------------------
    async def start_backtest(
        self, config: BacktestConfig, *, user_id: int | None = None, rerun_of: StoredRun | None = None
    ) -> dict[str, Any]:
        """Validate and accept a backtest (with `rerun_of`, a rerun compared to that run); runs in a worker thread."""
        async with self._lock:
            self._require_idle()
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, lambda: validate_backtest(config, settings=self.settings))
            run_id = uuid.uuid4().hex
            cfg = redact(config.model_dump())
            self.state = RunState(
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
            self._stop = threading.Event()
            if self.store is not None:
                await self.store.create(
                    run_id=run_id,
                    mode="backtest",
                    status="starting",
                    config=cfg,
                    **record_fields(config),
                    user_id=user_id,
                    server_id=self.server_id,
                    rerun_of=rerun_of.run_id if rerun_of is not None else None,
                )
            self._publish_status(force=True)
            self._task = asyncio.create_task(self._run_backtest(config, run_id, rerun_of), name=f"run-{run_id}")
        return {"run_id": run_id, "status": "starting", "message": "Backtest accepted; poll /status or stream it"}

    async def start_live(self, config: LiveConfig, *, user_id: int | None = None) -> dict[str, Any]:
        """Validate and record a paper/live request; trading itself is not available yet, so it is refused."""
        async with self._lock:
            self._require_idle()
            bt = BacktestConfig(
                strategy_name=config.strategy_name,
                strategy_params=config.strategy_params,
                strategy_class=config.strategy_class,
                symbols=config.symbols,
                timeframe=config.timeframe,
                exchange=config.exchange,
            )
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, lambda: validate_backtest(bt, settings=self.settings))
            run_id = uuid.uuid4().hex
            message = (
                f"{config.mode.capitalize()} trading does not run through the runner slot yet; the request was "
                "validated and recorded, and nothing was traded"
                + (
                    ". Start a paper session with POST /api/v1/runs (the same body): several run at once"
                    if config.mode == "paper"
                    else ""
                )
            )
            if self.store is not None:
                cfg = redact(config.model_dump())
                await self.store.create(
                    run_id=run_id,
                    mode=config.mode,
                    status="starting",
                    config=cfg,
                    **record_fields(config),
                    user_id=user_id,
                )
                await self.store.update_status(
                    run_id, status="failed", ended_at=datetime.now(UTC), error=f"NOT_IMPLEMENTED: {message}"
                )
        raise NotImplementedYetError(message, details={"run_id": run_id, "mode": config.mode})

    async def stop(self) -> dict[str, Any]:
        """Ask the active run to stop; waits up to a second for it to wind down."""
        if not self.state.active:
            raise NoActiveRunError(
                f"No run is active (status: {self.state.status})", details={"status": self.state.status}
            )
        st = self.state
        run_id = st.run_id
        self._stop.set()
        phase = st.phase or ""
        if phase == "queued" or phase.startswith("loading_data"):
            # The worker may be inside a network call for seconds (a page, an exchange's market list): it gives up
            # at its next check, and a run stopped before simulating has no results to wait for.
            self._announce_stopped(st)
            return {"run_id": run_id, "status": "stopped", "message": "Run stopped while loading data"}
        if phase == "saving":
            return {
                "run_id": run_id,
                "status": st.status,
                "message": "The simulation had already finished; its results are being saved and it will complete",
            }
        # The worker checks the flag between chunks (a few ms, 50 ms at most): wait for it, under a second.
        deadline = time.monotonic() + STOP_WAIT_S
        while self.state.active and self.state.run_id == run_id and time.monotonic() < deadline:
            if self._task is not None and self._task.done():
                break
            await asyncio.sleep(0.01)
        status = self.state.status if self.state.run_id == run_id else "stopped"
        message = "Run stopped" if status == "stopped" else f"Stop requested; run is {status}"
        return {"run_id": run_id, "status": status, "message": message}

    async def reset(self, *, expected_run_id: str | EllipsisType | None = ...) -> dict[str, Any]:
        """Return to idle from a finished run; refused while a run is active.

        With `expected_run_id` (the run the caller was authorized to reset), refused if another run took its place.
        """
        async with self._lock:
            if self.state.active:
                raise RunNotResettableError(
                    f"Cannot reset while a run is {self.state.status}; stop it first",
                    details={"status": self.state.status, "run_id": self.state.run_id},
                )
            if expected_run_id is not ... and self.state.run_id != expected_run_id:
                raise RunNotResettableError(
                    "Another run took the runner meanwhile; check /status and retry",
                    details={"status": self.state.status},
                )
            # A stopped run may still be saving: finish that first, so nothing of it outlives the reset.
            await self.settle()
            previous = self.state.run_id
            self.state = RunState()
            self._publish_status(force=True)
        return {"run_id": previous, "status": "idle", "message": "Runner reset to idle"}

    def _require_idle(self) -> None:
        if self.state.status != "idle":
            hint = " Reset it with DELETE /api/v1/run/reset." if self.state.status in FINISHED else ""
            raise RunAlreadyActiveError(
                f"Runner is not idle. Current status: {self.state.status}.{hint}",
                details={"status": self.state.status, "run_id": self.state.run_id},
            )

    # Results -------------------------------------------------------------------------------------------
    async def settle(self, run_id: str | None = None) -> None:
        """Wait until the current run (or `run_id`, if it is the current one) has finished saving."""
        if run_id is not None and run_id != self.state.run_id:
            return
        if self._task is not None and not self._task.done() and not self.state.active:
            await asyncio.wait({self._task}, timeout=120)

    def results_run_id(self) -> str | None:
        """The run `GET /results` shows: the current one, else the last one this process ran."""
        if self.state.run_id is not None:
            return self.state.run_id
        return self.last_results.run_id if self.last_results is not None else None

    def memory_results(self, run_id: str) -> RunResults | None:
        """Results of `run_id` in memory: a paper session's so far, the last finished run's, or the current one's."""
        if self.sessions is not None and run_id in self.sessions.runs:
            return self.sessions.runs[run_id].current_results()
        if self.last_results is not None and self.last_results.run_id == run_id:
            return self.last_results
        st = self.state
        if st.run_id == run_id and (st.active or self.busy):
            return empty_results(run_id=run_id, config=st.config, status=st.status, start_time=st.start_time)
        return None

    def forget(self, run_id: str) -> None:
        """Drop a deleted run's results from memory."""
        if self.last_results is not None and self.last_results.run_id == run_id:
            self.last_results = None

    # Execution -----------------------------------------------------------------------------------------
    async def _run_backtest(self, config: BacktestConfig, run_id: str, rerun_of: StoredRun | None = None) -> None:
        st = self.state
        loop = asyncio.get_running_loop()
        if st.status != "stopped":  # a stop while queued was announced already
            st.status = "running"
            st.phase = "loading_data"
        if self.store is not None:
            await self.store.update_status(run_id, status="running", started_at=datetime.now(UTC))
        self._publish_status(force=True)
        results: RunResults | None = None
        error: str | None = None
        error_code: str | None = None
        error_details: dict[str, Any] = {}
        try:
            results = await loop.run_in_executor(self._executor, self._execute, config, run_id, st, rerun_of)
            outcome = str(results.head["status"])
        except RunStoppedError:
            outcome = "stopped"
        except CracktraderError as exc:
            outcome, error, error_code, error_details = "failed", exc.message, exc.code, exc.details
            if isinstance(exc, ExchangeUnreachableError):
                self._record_exchange(config.exchange, False, exc.message)
        except Exception as exc:
            log.exception("Run %s failed", run_id)
            outcome, error, error_code = "failed", f"Internal error: {type(exc).__name__}", "INTERNAL_ERROR"
        end_time = now_iso()
        if results is None:
            results = empty_results(
                run_id=run_id,
                config=st.config,
                status=outcome,
                start_time=st.start_time,
                end_time=end_time,
                initial_cash=config.initial_cash,
                error=error,
            )
        results.head.update(end_time=end_time, status=outcome, error=error)
        if outcome == "stopped" and st.status != "stopped":
            # A stop is announced at once (as one during the simulation is): saving may take a while.
            st.status, st.end_time, st.ended_at, st.phase = "stopped", end_time, time.monotonic(), "saving"
            self._publish_status(force=True)
        # Served from memory while it saves; persisted before the outcome is announced, so a client that sees
        # "completed" can read the history.
        self.last_results = results
        if self.store is not None:
            try:
                await self.store.save_results(
                    run_id, results=results, status=outcome, ended_at=datetime.now(UTC), error=error
                )
            except Exception:
                log.exception("Could not save results of run %s", run_id)
        st.end_time, st.ended_at, st.phase = end_time, time.monotonic(), None
        st.error, st.error_code = error, error_code
        st.status = outcome
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if error is not None:
            payload = {"run_id": run_id, "code": error_code, "message": error, "details": error_details}
            self.bus.publish(events.Event(events.ERROR, payload))
        for callback in self._on_finish:
            callback(outcome, "backtest")
        if results.equity.shape[0]:
            # Progress events are throttled, so a short run may not have sent any equity point: send the last one.
            last = results.equity[-1]
            final = {
                "run_id": run_id,
                "bar": int(results.equity.shape[0]),
                "timestamp": iso_times(results.equity["ts"][-1:])[0],
                "value": float(last["value"]),
                "cash": float(last["cash"]),
                "pnl": float(last["value"]) - config.initial_cash,
            }
            self.bus.publish(events.Event(events.EQUITY_UPDATE, final))
        self._publish_status(force=True)
        await self._prune()

    def on_finish(self, callback: Any) -> None:
        """Call `callback(outcome, mode)` after each run ends (used for metrics)."""
        self._on_finish.append(callback)

    def _execute(
        self, config: BacktestConfig, run_id: str, st: RunState, rerun_of: StoredRun | None = None
    ) -> RunResults:
        """Worker thread: load data, simulate, build the results document."""

        def data_progress(symbol: str, done: int, total: int) -> None:
            if self._stop.is_set():
                raise RunStoppedError
            self._enter_phase(st, f"loading_data {symbol}")

        if self._stop.is_set():
            raise RunStoppedError
        prepared = prepare_backtest(config, settings=self.settings, data_progress=data_progress)
        if config.exchange != "synthetic":
            self._record_exchange(config.exchange, True, "")
        if self._stop.is_set():
            raise RunStoppedError
        st.phase = "simulating"
        st.bars_total = prepared.data.n_bars
        st.config = document_config(prepared)
        self._publish_status(force=True)
        result = run_prepared(
            prepared,
            progress=self._progress_callback(st, prepared),
            should_stop=self._stop.is_set,
            on_orders=self._orders_callback(st, prepared),
        )
        if not result.completed and self._stop.is_set():
            # Announce the stop now: building and saving a long run's document can take seconds.
            st.status, st.end_time, st.ended_at, st.phase = "stopped", now_iso(), time.monotonic(), "saving"
            self._publish_status(force=True)
        self._enter_phase(st, "saving")
        results = from_backtest(
            result, run_id=run_id, config=st.config, start_time=st.start_time or now_iso(), end_time=now_iso()
        )
        if rerun_of is not None:
            comparison = compare_runs(rerun_of, prepared.inputs.document(), RunOutcome.of(results))
            results.head["rerun"] = comparison.model_dump(mode="json")
        return results

    def _record_exchange(self, exchange: str, ok: bool, detail: str) -> None:
        self.exchange_status[exchange] = {"reachable": ok, "checked_at": now_iso(), "detail": detail[:200]}

    def _progress_callback(self, st: RunState, prepared: PreparedBacktest) -> Any:
        timestamps = prepared.data.timestamp
        step = max(1, prepared.data.n_bars // EQUITY_SAMPLES)

        def progress(done: int, total: int, cash: float, value: float) -> None:
            st.bars_processed, st.bars_total, st.cash, st.value = done, total, cash, value
            point = {
                "bar": done,
                "timestamp": iso_times(timestamps[done - 1 : done])[0],
                "value": value,
                "cash": cash,
                "pnl": value - (st.initial_cash or 0.0),
            }
            if not st.equity_samples or done - st.equity_samples[-1]["bar"] >= step:
                st.equity_samples.append(point)
            if self._publish_status():
                self.bus.publish_threadsafe(events.Event(events.EQUITY_UPDATE, {"run_id": st.run_id, **point}))

        return progress

    def _orders_callback(self, st: RunState, prepared: PreparedBacktest) -> Any:
        symbols, timestamps = prepared.data.symbols, prepared.data.timestamp
        run_id = st.run_id

        last_sent = [0.0]
        unsent = [0, 0]  # fills and orders since the last event

        def on_orders(rows: np.ndarray) -> None:
            filled = rows[:, O_STATUS] == STATUS_FILLED
            n_filled = int(np.count_nonzero(filled))
            # Only the last RECENT rows become dicts: the rest are in the results, and a chunk can hold many.
            tail = rows[-RECENT:]
            first_id = st.trade_count + 1 + n_filled - int(np.count_nonzero(filled[-RECENT:]))
            orders, trades = order_rows_to_dicts(tail, symbols, timestamps, first_trade_id=first_id)
            st.trade_count += n_filled
            st.recent_orders.extend(orders)
            st.recent_trades.extend(trades)
            unsent[0] += n_filled
            unsent[1] += int(rows.shape[0])
            # A backtest fills thousands of orders a second: streams get the latest fill and order at the status
            # rate, with how many happened since the last event; the results hold every one.
            now = time.monotonic()
            if now - last_sent[0] < self.throttle_s:
                return
            last_sent[0] = now
            if trades:
                payload = {"run_id": run_id, **trades[-1], "fills_since_last_event": unsent[0]}
                self.bus.publish_threadsafe(events.Event(events.TRADE_EXECUTION, payload))
            if orders:
                payload = {"run_id": run_id, **orders[-1], "orders_since_last_event": unsent[1]}
                self.bus.publish_threadsafe(events.Event(events.ORDER_UPDATE, payload))
            unsent[0] = unsent[1] = 0

        return on_orders

    def _enter_phase(self, st: RunState, phase: str) -> None:
        """Set the phase; a change is published at once (a UI must not show "simulating" while a run saves)."""
        if st.phase == phase:
            self._publish_status()
            return
        st.phase = phase
        self._publish_status(force=True)

    def _announce_stopped(self, st: RunState) -> None:
        """Report the run stopped now; it saves what it has next ("saving"), then its phase clears."""
        if st.status == "stopped":
            return
        st.status, st.end_time, st.ended_at, st.phase = "stopped", now_iso(), time.monotonic(), "saving"
        self._publish_status(force=True)

    def _publish_status(self, *, force: bool = False) -> bool:
        """Publish a status_update on lifecycle changes, and at most every `throttle_s` while progressing."""
        now = time.monotonic()
        if not force and now - self._last_status_publish < self.throttle_s:
            return False
        self._last_status_publish = now
        self.bus.publish_threadsafe(events.Event(events.STATUS_UPDATE, self.state.snapshot()))
        return True


def _warm_kernels() -> None:
    """Run a tiny backtest on each simulator path (loads numba's on-disk cache, or compiles once)."""
    from cracktrader.data.candles import Candles
    from cracktrader.engine.backtest import run_backtest
    from cracktrader.engine.broker import SimSettings
    from cracktrader.engine.market import align
    from cracktrader.strategies.builtin import SmaCross, SmaCrossEvents

    n = 64
    close = np.linspace(100.0, 120.0, n) + np.sin(np.arange(n))
    bars = Candles.from_columns(
        np.arange(n, dtype=np.int64) * 3_600_000, close, close + 1, close - 1, close, np.ones(n)
    )
    data = align({"WARM/UP": bars}, 8760.0)
    for strategy in (SmaCross(fast=2, slow=5), SmaCrossEvents(fast=2, slow=5)):
        run_backtest(strategy, data, SimSettings())
