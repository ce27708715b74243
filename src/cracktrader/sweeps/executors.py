"""Sweep chunks on a Dask cluster: a `LocalCluster` on this machine, or an existing scheduler or `Client`.

The candles, costs, grid and strategy code go to every worker once per sweep (a broadcast scatter); each task
names only a slice of the grid. Chunks are sized from the measured cost per combination so that Dask's per-task
cost stays under 1 % of the work. Dask redoes the chunks of a worker that dies; rows come back in grid order.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cracktrader.engine.broker import SimSettings
from cracktrader.engine.market import MarketData
from cracktrader.engine.strategy import StrategyParams
from cracktrader.errors import UserInputError
from cracktrader.sweeps.code import StrategyCode, load_strategy
from cracktrader.sweeps.grid import Combination
from cracktrader.sweeps.plans import Plan, SweepInputs, SweepRow, make_plan

if TYPE_CHECKING:
    from distributed import Client, Future

log = logging.getLogger(__name__)
# A task should take at least this long (Dask costs about 1-2 ms per task: under 1 %) ...
MIN_TASK_SECONDS = 0.25
# ... and at most this long, so progress moves and a cancel loses little work.
MAX_TASK_SECONDS = 2.0
# Chunks per worker over the rest of the sweep when the work allows: keeps the workers balanced to the end.
CHUNKS_PER_WORKER = 4
# Combinations in each worker's first chunk, which measures the cost per combination.
PROBE = 16
# How often the loop looks at the cancel event while chunks run.
POLL_SECONDS = 0.05
WORKER_WAIT_SECONDS = 60.0
CONNECT_SECONDS = 30.0
# Plans a worker keeps (candles and indicator columns): the current sweep and the one before.
_KEPT_PLANS = 2


class DaskExecutorError(UserInputError):
    """A Dask executor that cannot be used (missing extra, bad address, no workers)."""

    code = "UNSUPPORTED_EXECUTOR"
    status_code = 422


@dataclass(frozen=True, slots=True)
class DaskSweep:
    """What every worker gets once per sweep: the candles, costs, metrics, strategy code and the combinations."""

    key: str
    code: StrategyCode
    data: MarketData
    sim: SimSettings
    metrics: tuple[str, ...]
    combos: tuple[tuple[int, dict[str, Any]], ...]


def is_dask_executor(executor: object) -> bool:
    """`"dask"`, a `tcp://` scheduler address or a `distributed.Client`."""
    if executor == "dask" or (isinstance(executor, str) and executor.startswith(("tcp://", "tls://"))):
        return True
    return type(executor).__name__ == "Client" and type(executor).__module__.startswith("distributed")


@contextmanager
def dask_client(executor: str | Client, workers: int, cancel: threading.Event | None = None) -> Iterator[Client]:
    """A client on `executor`: a new loopback-only `LocalCluster` of `workers` processes, or an existing cluster.

    After a cancel, the local cluster closes in the background (stopping busy workers takes seconds), so a
    cancelled sweep returns at once.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - the dask extra is part of `all`
        raise DaskExecutorError("Dask sweeps need the dask extra: pip install 'cracktrader[dask]'") from None
    if isinstance(executor, Client):
        yield executor  # the caller's: never closed here
        return
    if executor == "dask":
        cluster = LocalCluster(
            n_workers=max(1, workers),
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            scheduler_port=0,
            # The scheduler serves its HTTP routes anyway: on loopback and a free port, never a fixed 8787.
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.WARNING,
        )
        try:
            with Client(cluster) as client:
                yield client
        finally:
            if cancel is not None and cancel.is_set():
                # Not a daemon: the interpreter still waits for the workers to stop before it exits.
                threading.Thread(target=cluster.close, name="cracktrader-dask-close").start()
            else:
                cluster.close()
        return
    try:
        client = Client(executor, timeout=CONNECT_SECONDS)
    except (OSError, TimeoutError, ValueError) as exc:
        raise DaskExecutorError(f"cannot reach the Dask scheduler at {executor}: {exc}") from None
    with client:
        yield client


# Per worker process: the plans of the latest sweeps, built on a sweep's first chunk.
_plans: OrderedDict[str, tuple[Plan, list[tuple[Combination, StrategyParams]]]] = OrderedDict()
_plans_lock = threading.Lock()


def _worker_plan(spec: DaskSweep) -> tuple[Plan, list[tuple[Combination, StrategyParams]]]:
    with _plans_lock:
        kept = _plans.get(spec.key)
        if kept is not None:
            return kept
        cls = load_strategy(spec.code)
        combos = [(Combination(i, p), cls.validate_params(p)) for i, p in spec.combos]
        plan = make_plan(SweepInputs(cls, spec.data, spec.sim, spec.metrics), combos)
        plan.evaluate(combos[:1])  # loads the compiled kernels, so the first chunk's timing measures the work
        _plans[spec.key] = (plan, combos)
        while len(_plans) > _KEPT_PLANS:
            _plans.popitem(last=False)
        return plan, combos


def evaluate_chunk(spec: DaskSweep, lo: int, hi: int) -> tuple[list[SweepRow], float]:
    """On a worker: the rows of combinations lo..hi of the sweep and the seconds they took."""
    plan, combos = _worker_plan(spec)
    started = time.perf_counter()
    rows = plan.evaluate(combos[lo:hi])
    return rows, time.perf_counter() - started


@dataclass(slots=True)
class _Sizer:
    """Chunk sizes from the measured seconds per combination."""

    total: int
    workers: int
    fixed: int | None
    seconds: float = 0.0
    measured: int = 0

    def record(self, count: int, seconds: float) -> None:
        self.seconds += seconds
        self.measured += count

    def size(self, remaining: int) -> int:
        if self.fixed:
            return self.fixed
        if not self.measured:
            return max(1, min(PROBE, math.ceil(self.total / (2 * self.workers))))
        cost = max(self.seconds / self.measured, 1e-9)
        balanced = math.ceil(remaining / (self.workers * CHUNKS_PER_WORKER))
        return max(1, min(balanced, math.ceil(MAX_TASK_SECONDS / cost)), math.ceil(MIN_TASK_SECONDS / cost))


def run_on_dask(
    client: Client,
    *,
    code: StrategyCode,
    data: MarketData,
    sim: SimSettings,
    metrics: tuple[str, ...],
    combos: Sequence[tuple[Combination, StrategyParams]],
    chunk_size: int | None,
    on_chunk: Callable[[list[SweepRow]], None],
    cancel: threading.Event | None,
) -> tuple[int, bool]:
    """Evaluate `combos` on the cluster, handing each completed chunk to `on_chunk`; returns (done, cancelled).

    A cancel returns within about `POLL_SECONDS`: chunks still running are dropped, completed ones are kept.
    """
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
    except TimeoutError:
        raise DaskExecutorError(f"the Dask cluster has no workers after {WORKER_WAIT_SECONDS:.0f} s") from None
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    spec = DaskSweep(uuid.uuid4().hex, code, data, sim, metrics, tuple((c.index, c.params) for c, _ in combos))
    shared = client.scatter(spec, broadcast=True, hash=False)
    sizer = _Sizer(len(combos), workers, chunk_size)
    running: dict[Future, tuple[int, int]] = {}
    redo: list[tuple[int, int]] = []  # ranges whose task was lost with the data it needed
    pos = done = submitted = 0
    cancelled = False

    def submit(lo: int, hi: int) -> None:
        nonlocal submitted
        key = f"cracktrader-sweep-{spec.key}-{submitted}"
        submitted += 1
        running[client.submit(evaluate_chunk, shared, lo, hi, key=key, pure=False)] = (lo, hi)

    try:
        while True:
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            # Before the cost is known, one probe chunk per worker; then at most two chunks per worker in flight.
            limit = workers if not sizer.measured and not chunk_size else 2 * workers
            while redo and len(running) < limit:
                submit(*redo.pop())
            while pos < len(combos) and len(running) < limit:
                hi = min(len(combos), pos + sizer.size(len(combos) - pos))
                submit(pos, hi)
                pos = hi
            if not running:
                break
            # Polled rather than `distributed.wait`, which raises on the first cancelled future instead of returning.
            finished = [fut for fut in running if fut.done()]
            if not finished:
                time.sleep(POLL_SECONDS)
                continue
            for fut in finished:
                lo, hi = running.pop(fut)
                if fut.cancelled():
                    # Dask redoes a dead worker's tasks itself, unless the scattered sweep left with it: send it again.
                    redo.append((lo, hi))
                    continue
                try:
                    rows, seconds = fut.result()
                except CancelledError:
                    # The result died with its worker between `done()` and the gather, and Dask gave the key up.
                    redo.append((lo, hi))
                    continue
                sizer.record(hi - lo, seconds)
                done += len(rows)
                on_chunk(rows)
            if redo and shared.status != "finished":
                log.info("The sweep's scattered data was lost with a worker; scattering it again")
                shared = client.scatter(spec, broadcast=True, hash=False)
    finally:
        if running:
            client.cancel(list(running))
        client.cancel([shared])
    return done, cancelled
