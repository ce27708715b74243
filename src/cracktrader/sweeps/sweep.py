"""`sweep`: run a strategy over a parameter grid in this process and keep one row of metrics per combination."""

from __future__ import annotations

import math
import multiprocessing
import os
import pickle
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cracktrader.data.sources.base import CandleSource
from cracktrader.engine.broker import SimSettings
from cracktrader.engine.market import MarketData
from cracktrader.engine.metrics import METRIC_KEYS
from cracktrader.engine.strategy import Strategy, StrategyParams
from cracktrader.errors import CracktraderError, UserInputError
from cracktrader.runs.backtest import prepare_backtest
from cracktrader.runs.config import BacktestConfig
from cracktrader.settings import Settings, get_settings
from cracktrader.strategies.registry import USER_MODULE_PREFIX, load_registry
from cracktrader.sweeps.cache import ChunkCache, sweep_key
from cracktrader.sweeps.code import StrategyCode, load_strategy, strategy_code
from cracktrader.sweeps.executors import dask_client, is_dask_executor, run_on_dask
from cracktrader.sweeps.grid import Combination, Skipped, expand
from cracktrader.sweeps.plans import EnginePlan, Plan, SweepInputs, SweepRow, make_plan

if TYPE_CHECKING:
    from distributed import Client

DEFAULT_METRICS: tuple[str, ...] = (
    "total_return",
    "sharpe_ratio",
    "max_drawdown",
    "total_trades",
    "win_rate",
    "profit_factor",
)
# Metrics where a smaller value ranks higher.
LOWER_IS_BETTER = frozenset(
    {"max_drawdown", "max_drawdown_duration", "max_drawdown_duration_bars", "max_drawdown_duration_days", "volatility"}
    | {"fees_paid"}
)
# Called with (combinations done, combinations to do) after each chunk.
SweepProgress = Callable[[int, int], None]
# Chunks per worker over the whole sweep: enough to balance the threads and report progress often.
CHUNKS_PER_WORKER = 8
MAX_CHUNK = 64
# A worker's start in a fresh interpreter on this 2-core machine: importing cracktrader (2-2.6 s: numba, talib and the
# pandas it imports) and loading the compiled kernels from numba's cache (about 0.7 s). The fork server pays it once
# per process; then its two workers started warm with 1 M bars' candles in about 0.1 s.
SPAWN_START_SECONDS = 3.0
WARM_START_SECONDS = 0.2
# The engine's time per bar and combination with its cheapest strategy (SmaCrossEvents, measured 0.8-2.3 us on
# this busy machine); a strategy doing more per bar only makes worker processes pay off sooner.
ENGINE_SECONDS_PER_BAR = 1e-6


class SweepExecutorError(UserInputError):
    """An executor this version cannot use."""

    code = "UNSUPPORTED_EXECUTOR"
    status_code = 422


@dataclass(slots=True)
class SweepResult:
    """A sweep's rows (grid order, or best first with `top_k`) and the combinations the schema rejected."""

    strategy: str
    metrics: tuple[str, ...]
    rows: list[SweepRow]
    skipped: list[Skipped]
    total: int
    evaluated: int
    cancelled: bool = False
    sort: str | None = None
    param_names: list[str] = field(default_factory=list)
    # Rows read from the chunk cache (a resumed sweep) rather than computed by this call.
    cached: int = 0

    def columns(self) -> dict[str, list[Any]]:
        """One column per parameter and per metric, one entry per row."""
        cols: dict[str, list[Any]] = {name: [r.params.get(name) for r in self.rows] for name in self.param_names}
        for name in self.metrics:
            cols[name] = [r.metrics[name] for r in self.rows]
        return cols

    def best(self, n: int, by: str | None = None) -> list[SweepRow]:
        """The `n` best rows by a metric (the sweep's sort, else sharpe_ratio), ties in grid order."""
        return sorted(self.rows, key=rank_key(by or self.sort or "sharpe_ratio"))[:n]

    def write(self, path: str | Path) -> Path:
        """Write every row as .parquet or .csv (pyarrow): parameters and metrics as columns."""
        import pyarrow as pa

        out = Path(path)
        table = pa.table(self.columns())
        if out.suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, out)
        elif out.suffix == ".csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, out)
        else:
            raise UserInputError(f"--out must end in .parquet or .csv, got {out.name!r}")
        return out


def rank_key(metric: str) -> Callable[[SweepRow], tuple[bool, float, int]]:
    """Sort key putting the best value of `metric` first, a missing value last and ties in grid order."""
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0

    def key(row: SweepRow) -> tuple[bool, float, int]:
        value = row.metrics.get(metric)
        missing = value is None or not math.isfinite(float(value))
        return (missing, 0.0 if missing else sign * float(value), row.index)  # type: ignore[arg-type]

    return key


def finite(metrics: Mapping[str, Any]) -> dict[str, float | int | None]:
    """Metrics as JSON carries them: a value that is not a finite number is null."""
    out: dict[str, float | int | None] = {}
    for key, value in metrics.items():
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        out[key] = value if ok else None
    return out


def best_first(rows: Sequence[SweepRow], sort: str) -> list[SweepRow]:
    """Rows in rank order by `sort` (ties in grid order) with their metrics as JSON carries them."""
    return [SweepRow(r.index, r.params, finite(r.metrics)) for r in sorted(rows, key=rank_key(sort))]


class _TopK:
    """The k best rows seen so far; memory stays within 2k rows whatever the grid's size."""

    def __init__(self, k: int, metric: str) -> None:
        self.k = k
        self.key = rank_key(metric)
        self.rows: list[SweepRow] = []

    def add(self, rows: Sequence[SweepRow]) -> None:
        self.rows += rows
        if len(self.rows) > 2 * self.k:
            self.rows = sorted(self.rows, key=self.key)[: self.k]

    def result(self) -> list[SweepRow]:
        return sorted(self.rows, key=self.key)[: self.k]


def _chunks(
    items: Sequence[tuple[Combination, StrategyParams]], size: int
) -> Iterator[list[tuple[Combination, StrategyParams]]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


# The plan a process-pool worker evaluates; set once per worker by its initializer.
_WORKER_PLAN: Plan | None = None
# Why a spawned worker has no plan: raised with every chunk it is given (an initializer's own error breaks the pool
# with no cause the caller could read).
_WORKER_ERROR: CracktraderError | None = None


class SweepWorkerError(CracktraderError):
    """A sweep's worker process died or could not load the sweep."""

    code = "SWEEP_WORKER_FAILED"
    status_code = 500


@dataclass(frozen=True, slots=True)
class _SpawnSpec:
    """What a spawned worker gets once: the strategy (its class by import path, or its code) and the sweep's inputs."""

    strategy: type[Strategy] | StrategyCode
    data: MarketData
    sim: SimSettings
    metrics: tuple[str, ...]


def _init_worker(plan: Plan) -> None:
    global _WORKER_PLAN
    _WORKER_PLAN = plan


def _init_spawned(payload: bytes) -> None:
    """A spawned worker's plan, from the sweep's inputs pickled once by the caller."""
    global _WORKER_PLAN, _WORKER_ERROR
    try:
        spec: _SpawnSpec = pickle.loads(payload)
        cls = load_strategy(spec.strategy) if isinstance(spec.strategy, StrategyCode) else spec.strategy
        _WORKER_PLAN = EnginePlan(SweepInputs(cls, spec.data, spec.sim, spec.metrics))
    except CracktraderError as exc:
        _WORKER_ERROR = exc
    except Exception as exc:  # an import that fails here (a module only the caller can import) must reach the caller
        _WORKER_ERROR = SweepWorkerError(f"a sweep worker could not load the sweep: {type(exc).__name__}: {exc}")


def _evaluate_in_worker(chunk: list[Combination]) -> list[SweepRow]:
    if _WORKER_ERROR is not None:
        raise _WORKER_ERROR
    assert _WORKER_PLAN is not None
    cls = _WORKER_PLAN.inputs.strategy_cls
    # Validated here, exactly as `expand` did: a file-loaded strategy's params class is another class in a spawned
    # worker, so its instances cannot travel.
    return _WORKER_PLAN.evaluate([(combo, cls.validate_params(combo.params)) for combo in chunk])


def _may_fork() -> bool:
    """Whether forking this process is safe: fork exists and no other thread runs.

    A fork copies the locks and pipes other threads hold (a server's worker pool, its queue feeders) in whatever
    state they are in; in a test process that hosted a server, later backtests then waited in its queue forever.
    The CLI and a plain script are single-threaded; elsewhere (Jupyter, an app with threads) the fork server's
    processes (`_clean_context`) run the sweep.
    """
    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1


def _spawn_strategy(cls: type[Strategy]) -> type[Strategy] | StrategyCode | None:
    """How `cls` reaches a spawned worker: by import path, a file-loaded one by its source; None when neither works.

    A class of `__main__` (a notebook cell, a script) is never sent: a fresh interpreter cannot import a notebook,
    and importing a script would run it again.
    """
    module = cls.__module__
    if module.startswith(USER_MODULE_PREFIX):
        return strategy_code(cls)
    if module in ("__main__", "__mp_main__") or getattr(sys.modules.get(module), "__spec__", None) is None:
        return None
    try:
        pickle.dumps(cls)  # checks that the class is reachable by its import path
    except (pickle.PicklingError, AttributeError, TypeError):
        return None
    return cls


# Whether a sweep of this process has started the fork server (with the engine warm in it).
_server_started = False


def _clean_context() -> BaseContext:
    """A start method that copies no thread of this process: forkserver, else spawn.

    The fork server is a fresh single-threaded process, started once per process, that has imported the engine and
    warmed its compiled kernels (`sweeps.warm`): its forked workers start at once rather than each paying 3-4 s.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    # Python's default preload (the main module) and ours; it applies when the server starts, on its first use.
    ctx.set_forkserver_preload(["__main__", "cracktrader.sweeps.warm"])
    return ctx


def _spawn_pays(plan: EnginePlan, workers: int, combos: int) -> bool:
    """Whether worker processes save more than their start costs (threads save little: the engine holds the GIL)."""
    serial = plan.inputs.data.n_bars * combos * ENGINE_SECONDS_PER_BAR
    start = WARM_START_SECONDS if _server_started else SPAWN_START_SECONDS
    return serial * (1 - 1 / workers) > start


def _pool(plan: Plan, workers: int, combos: int) -> Executor:
    """Threads over the compiled kernels (they release the GIL); processes for the Python engine, which holds it.

    Forked processes when forking is safe (they inherit the candles and the strategy class); otherwise, when the
    sweep is long enough to repay their start, processes of the fork server (or spawned), each receiving the candles
    once, pickled once here (49 MB for 1 M bars: 25 ms to pickle, 3 ms to load; copying them into shared memory
    took 72 ms).
    """
    global _server_started
    if isinstance(plan, EnginePlan) and workers > 1:
        if _may_fork():
            ctx = multiprocessing.get_context("fork")
            return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(plan,))
        strategy = _spawn_strategy(plan.inputs.strategy_cls) if _spawn_pays(plan, workers, combos) else None
        if strategy is not None:
            inputs = plan.inputs
            spec = _SpawnSpec(strategy, inputs.data, inputs.sim, inputs.metrics)
            payload = pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
            clean = _clean_context()
            _server_started = clean.get_start_method() == "forkserver"
            return ProcessPoolExecutor(workers, mp_context=clean, initializer=_init_spawned, initargs=(payload,))
    return ThreadPoolExecutor(workers, thread_name_prefix="cracktrader-sweep")


def _chunk_rows(fut: Future[list[SweepRow]]) -> list[SweepRow]:
    try:
        return fut.result()
    except BrokenProcessPool:
        raise SweepWorkerError(
            "a sweep worker process died (killed, or out of memory) before it finished its combinations"
        ) from None


def run_plan(
    plan: Plan,
    combos: Sequence[tuple[Combination, StrategyParams]],
    *,
    workers: int,
    chunk_size: int | None = None,
    progress: SweepProgress | None = None,
    cancel: threading.Event | None = None,
    top_k: int | None = None,
    sort: str = "sharpe_ratio",
    on_chunk: Callable[[list[SweepRow]], None] | None = None,
) -> tuple[list[SweepRow], int, bool]:
    """Evaluate combinations in chunks on `workers`; returns (rows, combinations evaluated, cancelled).

    Rows come back in grid order (or the top_k best first), whatever order the chunks complete in. `on_chunk`
    sees each completed chunk's rows (the sweep caches them there).
    """
    total = len(combos)
    size = chunk_size or max(1, min(MAX_CHUNK, math.ceil(total / (workers * CHUNKS_PER_WORKER))))
    pending = _chunks(combos, size)
    keep = _TopK(top_k, sort) if top_k else None
    rows: list[SweepRow] = []
    done = 0
    cancelled = False
    if progress is not None:
        progress(0, total)
    # No more workers than chunks: a worker process costs its start and a copy of the candles.
    workers = min(workers, math.ceil(total / size))
    in_process = workers <= 1
    pool = None if in_process else _pool(plan, workers, total)
    is_process = isinstance(pool, ProcessPoolExecutor)

    def collect(chunk_rows: list[SweepRow]) -> None:
        nonlocal done
        done += len(chunk_rows)
        if on_chunk is not None:
            on_chunk(chunk_rows)
        if keep is not None:
            keep.add(chunk_rows)
        else:
            rows.extend(chunk_rows)
        if progress is not None:
            progress(done, total)

    try:
        if pool is None:
            for chunk in pending:
                if cancel is not None and cancel.is_set():
                    cancelled = True
                    break
                collect(plan.evaluate(chunk))
        else:
            running: set[Future[list[SweepRow]]] = set()
            exhausted = False
            while True:
                # At most two chunks per worker in flight: a cancel leaves little to finish, memory stays bounded.
                while not exhausted and len(running) < 2 * workers:
                    if cancel is not None and cancel.is_set():
                        cancelled = True
                        exhausted = True
                        break
                    chunk = next(pending, [])
                    if not chunk:
                        exhausted = True
                        break
                    if is_process:
                        running.add(pool.submit(_evaluate_in_worker, [combo for combo, _ in chunk]))
                    else:
                        running.add(pool.submit(plan.evaluate, chunk))
                if not running:
                    break
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    if not fut.cancelled():
                        collect(_chunk_rows(fut))
                if cancel is not None and cancel.is_set():
                    cancelled = exhausted = True
                    for fut in running:
                        fut.cancel()  # queued chunks never start; running ones finish and are kept
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if keep is not None:
        return keep.result(), done, cancelled
    rows.sort(key=lambda r: r.index)
    return rows, done, cancelled


def _merge(cached: Sequence[SweepRow], computed: list[SweepRow], top_k: int | None, sort: str) -> list[SweepRow]:
    """Cached and freshly computed rows together: grid order, or the top_k best first."""
    if top_k:
        keep = _TopK(top_k, sort)
        keep.add(list(cached))
        keep.add(computed)
        return keep.result()
    return sorted([*cached, *computed], key=lambda r: r.index)


def check_metrics(metrics: Sequence[str], sort: str) -> None:
    """Refuse metric names the engine does not compute (the kept ones and the sort)."""
    unknown = [m for m in (*metrics, sort) if m not in METRIC_KEYS]
    if unknown:
        raise UserInputError(
            f"unknown metric(s) {', '.join(unknown)}; available: {', '.join(METRIC_KEYS)}",
            details={"unknown": unknown, "available": list(METRIC_KEYS)},
        )


def check_executor(executor: object) -> bool:
    """Whether `executor` is a Dask one; SweepExecutorError when it is neither that nor in process."""
    on_dask = is_dask_executor(executor)
    if executor not in (None, "local") and not on_dask:
        raise SweepExecutorError(
            f"executor {executor!r} is not supported; use None or 'local' (in process), 'dask' (a local cluster), "
            "a 'tcp://host:port' scheduler address or a distributed.Client"
        )
    return on_dask


def sweep(
    strategy: str | type[Strategy],
    grid: Mapping[str, Any],
    symbols: str | Sequence[str],
    timeframe: str = "1h",
    start: str | None = None,
    end: str | None = None,
    exchange: str | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    executor: str | Client | None = None,
    top_k: int | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    sort: str = "sharpe_ratio",
    workers: int | None = None,
    chunk_size: int | None = None,
    progress: SweepProgress | None = None,
    cancel: threading.Event | None = None,
    cache: bool = True,
    settings: Settings | None = None,
    source: CandleSource | None = None,
    **options: Any,
) -> SweepResult:
    """Backtest every combination of `grid` (with the fixed `params`) and return one row of metrics for each.

    `options` are the backtest's cost and fill settings (initial_cash, commission, slippage_bps, latency_bars,
    allow_short, exchange_rules), as in `BacktestConfig`. Rows are in grid order, or the `top_k` best by `sort`
    first. Each row's metrics equal its single backtest's, whatever the executor, the workers or the chunking.
    `executor`: None or "local" (this process), "dask" (a LocalCluster of `workers` processes), a "tcp://host:port"
    scheduler or a `distributed.Client`. With `cache`, completed chunks are kept under the settings'
    `sweep_cache_dir`, so the same sweep run again (after a cancel or a crash) computes only what is missing.
    """
    settings = settings or get_settings()
    on_dask = check_executor(executor)
    check_metrics(metrics, sort)
    if top_k is not None and top_k < 1:
        raise UserInputError("top_k must be at least 1")
    if workers is not None and workers < 1:
        raise UserInputError("workers must be at least 1")
    cls = strategy if isinstance(strategy, type) else load_registry(settings).get(strategy)
    code = strategy_code(cls)
    if on_dask and code is None:
        raise SweepExecutorError(f"strategy {cls.name} has no source file, so Dask workers cannot load it")
    expanded = expand(cls, grid, params)
    names = list(dict.fromkeys([*(params or {}), *grid]))
    result = SweepResult(
        cls.name, tuple(metrics), [], expanded.skipped, expanded.total, 0, sort=sort, param_names=names
    )
    if not expanded.valid:
        return result
    config = BacktestConfig(
        strategy_name=cls.name,
        strategy_params=expanded.valid[0][0].params,
        symbols=[symbols] if isinstance(symbols, str) else list(symbols),
        timeframe=timeframe,
        start_date=start,
        end_date=end,
        exchange=exchange or settings.default_exchange,
        **options,
    )
    prepared = prepare_backtest(config, settings=settings, source=source, strategy_cls=cls)
    store = None
    if cache and code is not None:
        key = sweep_key(code, prepared.data, prepared.sim, tuple(metrics), expanded.valid)
        store = ChunkCache.for_sweep(settings.sweep_cache_dir, key)
    cached = list(store.load(expanded.valid).values()) if store is not None else []
    done_before = {row.index for row in cached}
    todo = [item for item in expanded.valid if item[0].index not in done_before]
    total = len(expanded.valid)
    offset = len(cached)

    def report(done: int, _todo: int) -> None:
        if progress is not None:
            progress(offset + done, total)

    def keep(rows: list[SweepRow]) -> None:
        if store is not None:
            store.store(rows)

    computed: list[SweepRow] = []
    done, cancelled = 0, False
    if not todo:
        report(0, 0)
    elif on_dask:
        assert code is not None and executor is not None
        collected = _TopK(top_k, sort) if top_k else None

        def on_chunk(rows: list[SweepRow]) -> None:
            nonlocal done
            keep(rows)
            done += len(rows)
            if collected is not None:
                collected.add(rows)
            else:
                computed.extend(rows)
            report(done, len(todo))

        report(0, len(todo))
        with dask_client(executor, workers or os.cpu_count() or 1, cancel) as client:
            done, cancelled = run_on_dask(
                client,
                code=code,
                data=prepared.data,
                sim=prepared.sim,
                metrics=tuple(metrics),
                combos=todo,
                chunk_size=chunk_size,
                on_chunk=on_chunk,
                cancel=cancel,
            )
        computed = collected.result() if collected is not None else computed
    else:
        threads = workers or os.cpu_count() or 1
        plan = make_plan(SweepInputs(cls, prepared.data, prepared.sim, tuple(metrics)), todo, threads)
        computed, done, cancelled = run_plan(
            plan,
            todo,
            workers=threads,
            chunk_size=chunk_size,
            progress=report,
            cancel=cancel,
            top_k=top_k,
            sort=sort,
            on_chunk=keep,
        )
    result.rows = _merge(cached, computed, top_k, sort)
    result.evaluated, result.cached, result.cancelled = offset + done, offset, cancelled
    return result
