"""The backtest worker pool: a few spawned processes at a lower priority, fed in order from a queue.

Processes, not threads: a backtest's Python strategy would otherwise hold the GIL the API needs. Spawned, not
forked: the server has threads. One pool per process and size (test suites start many apps): runs over its
size wait in a FIFO queue, each with a stop flag that crosses the process boundary.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Protocol

from cracktrader.runs import worker, worker_logs
from cracktrader.runs.worker import JobOutcome

log = logging.getLogger(__name__)

OnMessage = Callable[[str, dict[str, Any]], None]
# Called with the target's return value, or a JobOutcome when the job was stopped while waiting or its worker died.
OnDone = Callable[[Any], None]


class PoolJob(Protocol):
    """What the pool needs of a job: an id its messages and stop requests are addressed by."""

    @property
    def run_id(self) -> str: ...


# A module-level function (pickled by reference) run in a worker as target(job, slot).
Target = Callable[[Any, int], Any]


@dataclass(slots=True)
class _Entry:
    job: PoolJob
    on_message: OnMessage
    on_done: OnDone
    target: Target = worker.run_job
    slot: int | None = None


class WorkerPool:
    """`size` worker processes; jobs beyond them wait, first come first served."""

    def __init__(self, size: int, niceness: int) -> None:
        self.size = size
        self.niceness = niceness
        self._ctx = multiprocessing.get_context("spawn")
        self._messages: Any = self._ctx.Queue()
        self._flags: Any = self._ctx.RawArray("b", size)
        self._lock = threading.Lock()
        self._queue: deque[_Entry] = deque()
        self._running: dict[str, _Entry] = {}
        self._listeners: dict[str, OnMessage] = {}
        self._free = list(range(size))
        self._executor = self._new_executor()
        worker.remove_stale_shipments(os.getpid())
        self._reader = threading.Thread(target=self._read, name="cracktrader-pool-messages", daemon=True)
        self._reader.start()
        self.closed = False
        self._warmed = False
        self._lowered: set[int] = set()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.size,
            mp_context=self._ctx,
            initializer=worker.init_worker,
            initargs=(self._messages, self._flags, self.niceness, os.getpid()),
        )

    # Commands --------------------------------------------------------------------------------------------
    def submit(self, job: PoolJob, on_message: OnMessage, on_done: OnDone, target: Target = worker.run_job) -> None:
        """Run `target(job, slot)` (a backtest by default) when a worker is free; callbacks run on the pool's threads.

        Every job, whatever its target, takes one worker: sweeps and backtests share the concurrency limit.
        """
        entry = _Entry(job, on_message, on_done, target)
        with self._lock:
            self._listeners[job.run_id] = on_message
            self._queue.append(entry)
            self._dispatch()

    def stop(self, run_id: str) -> bool:
        """Stop a queued job (it ends "stopped" at once) or flag a running one; False if neither."""
        with self._lock:
            for entry in self._queue:
                if entry.job.run_id == run_id:
                    self._queue.remove(entry)
                    break
            else:
                running = self._running.get(run_id)
                if running is None or running.slot is None:
                    return False
                self._flags[running.slot] = 1
                return True
            self._listeners.pop(run_id, None)
        entry.on_done(JobOutcome("stopped"))
        return True

    def position(self, run_id: str) -> int | None:
        """Where a waiting job is in the queue (0: next), None when it is not waiting."""
        with self._lock:
            for i, entry in enumerate(self._queue):
                if entry.job.run_id == run_id:
                    return i
        return None

    def warm(self) -> None:
        """Start every worker now (each loads the compiled kernels as it starts), not at the first run."""
        with self._lock:
            if self._warmed:
                return
            self._warmed = True
            for _ in range(self.size):
                self._executor.submit(worker.ping)
            self._lower_new_workers()

    def _lower_new_workers(self) -> None:
        """Lower the priority of workers just started, at once: importing numpy and numba takes them seconds of CPU
        before their own initializer runs (which sets it too)."""
        for pid in self.pids():
            if pid not in self._lowered:
                self._lowered.add(pid)
                worker.lower_priority(pid, self.niceness, os.getpid())

    def pids(self) -> list[int]:
        """Process ids of the workers started so far."""
        processes = getattr(self._executor, "_processes", None) or {}
        return sorted(int(pid) for pid in processes)

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._running)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._queue)

    # Internals ------------------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Start queued jobs while workers are free (called under the lock)."""
        while self._queue and self._free:
            entry = self._queue.popleft()
            entry.slot = self._free.pop()
            self._flags[entry.slot] = 0
            self._running[entry.job.run_id] = entry
            try:
                future = self._executor.submit(entry.target, entry.job, entry.slot)
            except (BrokenProcessPool, RuntimeError):
                self._executor = self._new_executor()
                future = self._executor.submit(entry.target, entry.job, entry.slot)
            future.add_done_callback(functools.partial(self._finished, entry))
            self._lower_new_workers()

    def _finished(self, entry: _Entry, future: Future[Any]) -> None:
        try:
            result = future.result()
            outcome = worker.receive(result) if isinstance(result, JobOutcome) else result
        except BrokenProcessPool:
            log.error("A backtest worker died during run %s", entry.job.run_id)
            outcome = JobOutcome("failed", error="The backtest worker process died", error_code="WORKER_DIED")
            with self._lock:
                if getattr(self._executor, "_broken", False):  # every job of it failed: start afresh
                    self._executor = self._new_executor()
        except Exception as exc:  # the job could not be sent (unpicklable) or its outcome not read
            log.exception("Run %s could not run in a worker", entry.job.run_id)
            outcome = JobOutcome("failed", error=f"Internal error: {type(exc).__name__}", error_code="INTERNAL_ERROR")
        with self._lock:
            self._running.pop(entry.job.run_id, None)
            if entry.slot is not None:
                self._flags[entry.slot] = 0
                self._free.append(entry.slot)
            self._dispatch()
        entry.on_done(outcome)

    def _read(self) -> None:
        """Hand each worker message to its run's listener (in the order the worker sent them)."""
        while True:
            try:
                message = self._messages.get()
            except (EOFError, OSError):
                return
            except Exception:  # at interpreter exit the queue's machinery goes away under the thread
                if self.closed:
                    return
                log.exception("Could not read a backtest worker's message")
                continue
            if message is None:
                return
            kind, run_id, payload = message
            if kind == worker_logs.LOG:
                with contextlib.suppress(Exception):  # a malformed record is dropped, never the reader
                    worker_logs.replay(run_id, payload)
                continue
            with self._lock:
                listener = self._listeners.get(run_id)
                if kind == worker.END:
                    self._listeners.pop(run_id, None)
            if listener is not None:
                try:
                    listener(kind, payload)
                except Exception:
                    log.exception("Could not handle a message of run %s", run_id)

    def close(self) -> None:
        """Stop the workers (at interpreter exit)."""
        if self.closed:
            return
        self.closed = True
        with self._lock:
            for i in range(self.size):
                self._flags[i] = 1
            self._queue.clear()
        processes = list((getattr(self._executor, "_processes", None) or {}).values())
        self._executor.shutdown(wait=False, cancel_futures=True)
        # A worker still loading its kernels would hold up the interpreter's exit for seconds: end it now.
        for process in processes:
            with contextlib.suppress(Exception):
                process.terminate()
        with contextlib.suppress(OSError, ValueError):
            self._messages.put(None)


_pools: dict[tuple[int, int], WorkerPool] = {}
_pools_lock = threading.Lock()


def shared_pool(size: int, niceness: int) -> WorkerPool:
    """This process's pool of `size` workers (created on first use, closed at exit)."""
    with _pools_lock:
        pool = _pools.get((size, niceness))
        if pool is None or pool.closed:
            pool = _pools[(size, niceness)] = WorkerPool(size, niceness)
        return pool


def _close_pools() -> None:
    for pool in list(_pools.values()):
        pool.close()


# Before concurrent.futures' own exit hook (registered when it was imported), which waits for the workers: the
# threading hooks run in reverse order of registration, ahead of atexit's.
_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    _register(_close_pools)
else:  # pragma: no cover - other interpreters
    atexit.register(_close_pools)
