"""What runs inside a backtest worker process: load data, simulate, build the results, report as it goes.

The server talks to a worker through two shared objects handed over when the process starts: a queue of
messages (phase changes, progress, orders) and an array of stop flags, one per slot of the pool.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cracktrader.engine.records import O_STATUS, STATUS_FILLED
from cracktrader.errors import CracktraderError, ExchangeUnreachableError
from cracktrader.runs import worker_logs
from cracktrader.runs.backtest import PreparedBacktest, document_config, prepare_backtest, run_prepared
from cracktrader.runs.config import BacktestConfig
from cracktrader.runs.document import iso_times, now_iso, order_rows_to_dicts
from cracktrader.runs.errors import RunStoppedError
from cracktrader.runs.lease import pid_alive
from cracktrader.runs.rerun import RunOutcome, StoredRun, compare_runs
from cracktrader.runs.results import RunResults, from_backtest
from cracktrader.settings import Settings

log = logging.getLogger(__name__)

EQUITY_SAMPLES = 500  # points of the equity curve `/status/detailed` shows while a run goes
RECENT = 50  # orders and fills `/status/detailed` shows while a run goes
SHM_DIR = Path("/dev/shm")  # tmpfs: shared memory by path (Linux); elsewhere results are pickled
SHM_PREFIX = "cracktrader-run-"
PARENT_CHECK_S = 0.5  # how often a worker checks that its server still runs

# Message kinds, sent as (kind, run_id, payload).
STARTED = "started"
PHASE = "phase"
PROGRESS = "progress"
ORDERS = "orders"
STOPPED = "stopped"
EXCHANGE = "exchange"
END = "end"  # the last message of a job: everything it sent before has arrived

_messages: Any = None  # the pool's message queue (multiprocessing.Queue)
_flags: Any = None  # the pool's stop flags (multiprocessing.RawArray of bytes)
_log_forward: worker_logs.ForwardingHandler | None = None  # sends this worker's log records to the server


@dataclass(frozen=True, slots=True)
class Job:
    """One backtest for a worker: everything it needs crosses the process boundary in here."""

    run_id: str
    config: BacktestConfig
    settings: Settings
    start_time: str
    throttle_s: float
    rerun_of: StoredRun | None = None


@dataclass(slots=True)
class JobOutcome:
    """What a worker hands back: the results, or why there are none (exceptions are not pickled across)."""

    status: str  # completed, stopped or failed
    results: RunResults | None = None
    error: str | None = None
    error_code: str | None = None
    error_details: dict[str, Any] = field(default_factory=dict)
    exchange_unreachable: bool = False
    from_worker: bool = False  # a worker ran it (its messages end with END), not stopped while it waited
    shipped: Shipped | None = None  # the results' arrays, left in shared memory rather than pickled


@dataclass(frozen=True, slots=True)
class Shipped:
    """Where a result's equity and orders arrays wait in shared memory (a file in /dev/shm)."""

    path: str
    n_equity: int
    orders_offset: int
    n_orders: int


def ship(outcome: JobOutcome, job: Job) -> JobOutcome:
    """Leave the results' arrays in shared memory: unpickling tens of MB from the pipe held the server's GIL."""
    results = outcome.results
    if results is None or not SHM_DIR.is_dir():
        return outcome
    path = SHM_DIR / f"{SHM_PREFIX}{os.getppid()}-{job.run_id}.bin"
    equity, orders = results.equity, results.orders
    offset = -(-equity.nbytes // 64) * 64  # aligned for the orders' fields
    try:
        with open(path, "wb") as f:
            f.write(np.ascontiguousarray(equity).tobytes())  # copies here, in the worker
            f.write(b"\0" * (offset - equity.nbytes))
            f.write(np.ascontiguousarray(orders).tobytes())
    except OSError:  # no room: send them through the pipe
        path.unlink(missing_ok=True)
        return outcome
    empty = RunResults(results.head, equity[:0], orders[:0])
    outcome.results = empty
    outcome.shipped = Shipped(str(path), int(equity.shape[0]), offset, int(orders.shape[0]))
    return outcome


def receive(outcome: JobOutcome) -> JobOutcome:
    """Map shipped arrays into this process (no copy, no GIL held for it) and remove their file."""
    shipped, results = outcome.shipped, outcome.results
    if shipped is None or results is None:
        return outcome
    try:
        with open(shipped.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            buffer: Any = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) if size else b""
    finally:
        with contextlib.suppress(OSError):
            os.unlink(shipped.path)
    equity = np.frombuffer(buffer, dtype=results.equity.dtype, count=shipped.n_equity, offset=0)
    orders = np.frombuffer(buffer, dtype=results.orders.dtype, count=shipped.n_orders, offset=shipped.orders_offset)
    outcome.results = RunResults(results.head, equity, orders)
    outcome.shipped = None
    return outcome


def remove_stale_shipments(server_pid: int) -> None:
    """Remove shipped results left by a server of this host that died before it read them."""
    if not SHM_DIR.is_dir():
        return
    for path in SHM_DIR.glob(f"{SHM_PREFIX}*.bin"):
        pid = path.name[len(SHM_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != server_pid and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                path.unlink()


def init_worker(messages: Any, flags: Any, niceness: int, server_pid: int) -> None:
    """Process initializer: keep the shared objects, lower the priority, load the compiled kernels."""
    global _messages, _flags, _log_forward
    _messages, _flags = messages, flags
    _log_forward = worker_logs.install(send)
    _watch_parent(server_pid)
    lower_priority(0, niceness, server_pid)
    warm_kernels()


def lower_priority(pid: int, niceness: int, server_pid: int) -> None:
    """Set a worker's niceness to the server's plus `niceness` (absolute, so doing it twice changes nothing)."""
    if not niceness or not hasattr(os, "setpriority"):
        return
    try:
        target = min(19, os.getpriority(os.PRIO_PROCESS, server_pid) + niceness)
        os.setpriority(os.PRIO_PROCESS, pid, target)
    except OSError:  # not permitted, or the process is gone: it runs at the server's priority
        log.warning("Could not lower the backtest worker's priority")


def _watch_parent(parent: int) -> None:
    """End this worker once the server that started it is gone (killed, or exited without stopping its pool):
    the pool's queues keep a worker waiting forever otherwise."""

    def watch() -> None:
        while os.getppid() == parent:  # the server may have died while this worker was starting: then not equal
            time.sleep(PARENT_CHECK_S)
        os._exit(0)

    threading.Thread(target=watch, name="cracktrader-parent-watch", daemon=True).start()


def send(kind: str, job_id: str, payload: dict[str, Any]) -> None:
    """Send a message of a job to the server (the pool hands it to the job's listener)."""
    if _messages is None:
        return
    if _log_forward is not None and kind == END:
        _log_forward.end()  # its note on records over the limit comes before the job's last message
    _messages.put((kind, job_id, payload))
    if _log_forward is not None and kind == STARTED:
        _log_forward.begin(job_id)


def stop_requested(slot: int) -> bool:
    """Whether the server asked the job in `slot` to stop."""
    return _flags is not None and bool(_flags[slot])


def ping() -> int:
    """A no-op task: submitting a few starts the workers (and warms them) before the first run needs them."""
    return os.getpid()


def run_job(job: Job, slot: int) -> JobOutcome:
    """Run one backtest in this worker; `slot` is its stop flag."""
    reporter = _Reporter(job, slot)
    reporter.send(STARTED, {})
    try:
        outcome = _execute(job, reporter)
    except RunStoppedError:
        outcome = JobOutcome("stopped")
    except CracktraderError as exc:
        outcome = JobOutcome(
            "failed",
            error=exc.message,
            error_code=exc.code,
            error_details=exc.details,
            exchange_unreachable=isinstance(exc, ExchangeUnreachableError),
        )
    except Exception as exc:
        log.exception("Run %s failed", job.run_id)
        outcome = JobOutcome("failed", error=f"Internal error: {type(exc).__name__}", error_code="INTERNAL_ERROR")
    finally:
        reporter.send(END, {})
    outcome.from_worker = True
    return outcome


def _execute(job: Job, rep: _Reporter) -> JobOutcome:
    config = job.config

    def data_progress(symbol: str, done: int, total: int) -> None:
        rep.check_stop()
        rep.phase(f"loading_data {symbol}")

    rep.phase("loading_data")
    rep.check_stop()
    prepared = prepare_backtest(config, settings=job.settings, data_progress=data_progress)
    if config.exchange != "synthetic":
        rep.send(EXCHANGE, {"exchange": config.exchange, "ok": True, "detail": ""})
    rep.check_stop()
    doc_config = document_config(prepared)
    rep.phase("simulating", bars_total=prepared.data.n_bars, config=doc_config)
    result = run_prepared(
        prepared,
        progress=rep.progress_callback(prepared),
        should_stop=rep.stop_requested,
        on_orders=rep.orders_callback(prepared),
    )
    rep.flush_progress()
    rep.flush_orders()
    if not result.completed and rep.stop_requested():
        # Announced now: building a long run's document can take seconds.
        rep.send(STOPPED, {})
    rep.phase("saving")
    results = from_backtest(result, run_id=job.run_id, config=doc_config, start_time=job.start_time, end_time=now_iso())
    if job.rerun_of is not None:
        comparison = compare_runs(job.rerun_of, prepared.inputs.document(), RunOutcome.of(results))
        results.head["rerun"] = comparison.model_dump(mode="json")
    return ship(JobOutcome(str(results.head["status"]), results=results), job)


class _Reporter:
    """Sends a job's messages, throttled as the server publishes them."""

    def __init__(self, job: Job, slot: int) -> None:
        self.job = job
        self.slot = slot
        self.last_phase: str | None = None
        self.last_progress = 0.0
        self.last_orders = 0.0
        self.trade_count = 0
        self.orders: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.trades: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.unsent = [0, 0]  # fills and orders since the last event
        self.latest: dict[str, Any] | None = None  # progress not sent yet

    def send(self, kind: str, payload: dict[str, Any]) -> None:
        send(kind, self.job.run_id, payload)

    def stop_requested(self) -> bool:
        return stop_requested(self.slot)

    def check_stop(self) -> None:
        if self.stop_requested():
            raise RunStoppedError

    def phase(self, phase: str, **extra: Any) -> None:
        """A phase change is sent at once (a UI must not show "simulating" while a run saves)."""
        if phase == self.last_phase and not extra:
            return
        self.last_phase = phase
        self.send(PHASE, {"phase": phase, **extra})

    def progress_callback(self, prepared: PreparedBacktest) -> Any:
        timestamps = prepared.data.timestamp
        step = max(1, prepared.data.n_bars // EQUITY_SAMPLES)
        last_sample = [-step]

        def progress(done: int, total: int, cash: float, value: float) -> None:
            now = time.monotonic()
            due_sample = done - last_sample[0] >= step
            publish = now - self.last_progress >= self.job.throttle_s
            self.latest = None
            if not (due_sample or publish or done >= total):
                # Kept, not sent: the last one goes out before the phase changes.
                self.latest = {"done": done, "total": total, "cash": cash, "value": value, "point": None}
                return
            point = {
                "bar": done,
                "timestamp": iso_times(timestamps[done - 1 : done])[0],
                "value": value,
                "cash": cash,
                "pnl": value - self.job.config.initial_cash,
            }
            if due_sample:
                last_sample[0] = done
            if publish:
                self.last_progress = now
            payload = {"done": done, "total": total, "cash": cash, "value": value, "point": point}
            self.send(PROGRESS, {**payload, "sample": due_sample, "publish": publish})

        return progress

    def flush_progress(self) -> None:
        """The last progress not sent yet (the counters `/status` shows once simulating ends)."""
        if self.latest is not None:
            self.send(PROGRESS, {**self.latest, "sample": False, "publish": False})
            self.latest = None

    def orders_callback(self, prepared: PreparedBacktest) -> Any:
        symbols, timestamps = prepared.data.symbols, prepared.data.timestamp

        def on_orders(rows: np.ndarray) -> None:
            filled = rows[:, O_STATUS] == STATUS_FILLED
            n_filled = int(np.count_nonzero(filled))
            # Only the last RECENT rows become dicts: the rest are in the results, and a chunk can hold many.
            tail = rows[-RECENT:]
            first_id = self.trade_count + 1 + n_filled - int(np.count_nonzero(filled[-RECENT:]))
            orders, trades = order_rows_to_dicts(tail, symbols, timestamps, first_trade_id=first_id)
            self.trade_count += n_filled
            self.orders.extend(orders)
            self.trades.extend(trades)
            self.unsent[0] += n_filled
            self.unsent[1] += int(rows.shape[0])
            # A backtest fills thousands of orders a second: streams get the latest fill and order at the status
            # rate, with how many happened since the last event; the results hold every one.
            now = time.monotonic()
            if now - self.last_orders >= self.job.throttle_s:
                self.last_orders = now
                self._send_orders(publish=True)

        return on_orders

    def flush_orders(self) -> None:
        """The orders since the last message, for `/status/detailed` (no event: the results hold them)."""
        if self.orders or self.trades:
            self._send_orders(publish=False)

    def _send_orders(self, *, publish: bool) -> None:
        payload = {
            "trade_count": self.trade_count,
            "orders": list(self.orders),
            "trades": list(self.trades),
            "fills_since_last_event": self.unsent[0],
            "orders_since_last_event": self.unsent[1],
            "publish": publish,
        }
        self.orders.clear()
        self.trades.clear()
        if publish:
            self.unsent[0] = self.unsent[1] = 0
        self.send(ORDERS, payload)


def warm_kernels() -> None:
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
