"""Event-driven sweeps in a process with other threads (Jupyter, a server): spawned worker processes, not threads."""

from __future__ import annotations

import hashlib
import importlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cracktrader.sweeps import SweepResult, sweep
from cracktrader.sweeps.code import StrategyCode
from cracktrader.sweeps.plans import EnginePlan
from test_sweeps import ALL, RANGE, _plan_for

sweep_module = importlib.import_module("cracktrader.sweeps.sweep")  # the package exports a function of that name
GRID = {"fast": [5, 10], "slow": [20, 40]}

# An event-driven user strategy: SmaCrossEvents' rules, plus a line with its process id in `log` for every run.
PID_STRATEGY = """
import os

import numpy as np

from cracktrader.engine import indicators as ta
from cracktrader.engine.strategy import Strategy, StrategyParams


class PidParams(StrategyParams):
    fast: int = 5
    slow: int = 20
    log: str = ""
    die: bool = False


class PidEvents(Strategy):
    Params = PidParams

    def warmup(self):
        return ta.cross_warmup(ta.sma_warmup(self.params.slow))

    def indicators(self, bars):
        p = self.params
        if p.die:
            os._exit(3)  # a worker killed mid-sweep, as by the OOM killer
        if p.log:
            with open(p.log, "a") as f:
                f.write(f"{os.getpid()}\\n")
        fast, slow = ta.sma(bars.close, p.fast), ta.sma(bars.close, p.slow)
        return {"cross": ta.crossed_above(fast, slow).view(np.int8) - ta.crossed_below(fast, slow).view(np.int8)}

    def on_bar(self, ctx):
        for symbol in ctx.symbols:
            cross = ctx.indicator("cross", symbol)
            if cross > 0 and ctx.position(symbol) == 0.0:
                ctx.buy(symbol, fraction=1.0)
            elif cross < 0 and ctx.position(symbol) > 0.0:
                ctx.sell(symbol)
"""


@pytest.fixture
def other_thread() -> Iterator[None]:
    """Another thread alive, as in a notebook or a server: forking this process is not safe."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="test-other-thread")
    thread.start()
    try:
        assert sweep_module._may_fork() is False
        yield
    finally:
        stop.set()
        thread.join()


@pytest.fixture
def pools(monkeypatch: pytest.MonkeyPatch) -> list[Executor]:
    """Every executor the sweeps make, with spawning chosen whatever the (small) size of the test's sweeps."""
    made: list[Executor] = []
    real = sweep_module._pool

    def spy(plan: Any, workers: int, combos: int) -> Executor:
        made.append(real(plan, workers, combos))
        return made[-1]

    monkeypatch.setattr(sweep_module, "_pool", spy)
    monkeypatch.setattr(sweep_module, "SPAWN_START_SECONDS", 0.0)
    monkeypatch.setattr(sweep_module, "WARM_START_SECONDS", 0.0)
    return made


@pytest.fixture
def pid_strategy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "strategies"
    folder.mkdir()
    path = folder / "pid_events.py"
    path.write_text(PID_STRATEGY)
    monkeypatch.setenv("CRACKTRADER_STRATEGY_DIR", str(folder))
    return path


def _spawned(pool: Executor) -> bool:
    """A pool of processes that copied no thread of this one: the fork server's (spawn where there is none)."""
    method = sweep_module._clean_context().get_start_method()
    assert method in ("forkserver", "spawn")
    return isinstance(pool, ProcessPoolExecutor) and pool._mp_context.get_start_method() == method  # type: ignore[attr-defined]


def _bits(result: SweepResult) -> bytes:
    values = [[np.nan if v is None else float(v) for v in row.metrics.values()] for row in result.rows]
    return np.array(values, dtype=float).tobytes()


def test_an_event_sweep_beside_another_thread_runs_in_spawned_processes_with_identical_rows(
    other_thread: None, pools: list[Executor]
) -> None:
    serial = sweep("SmaCrossEvents", GRID, metrics=ALL, workers=1, cache=False, **RANGE)
    spawned = sweep("SmaCrossEvents", GRID, metrics=ALL, workers=2, chunk_size=1, cache=False, **RANGE)
    assert len(pools) == 1 and _spawned(pools[0])
    assert [r.index for r in spawned.rows] == [0, 1, 2, 3]  # grid order, whatever order the workers finished in
    assert spawned.rows == serial.rows
    assert _bits(spawned) == _bits(serial)


def test_a_user_strategy_file_reaches_spawned_workers_by_its_hashed_source(
    other_thread: None, pools: list[Executor], pid_strategy: Path, tmp_path: Path
) -> None:
    log = tmp_path / "pids.log"
    fixed = {"log": str(log)}
    serial = sweep("PidEvents", GRID, params=fixed, metrics=ALL, workers=1, cache=False, **RANGE)
    assert set(log.read_text().split()) == {str(os.getpid())}
    log.unlink()
    spawned = sweep("PidEvents", GRID, params=fixed, metrics=ALL, workers=2, chunk_size=1, cache=False, **RANGE)
    assert len(pools) == 1 and _spawned(pools[0])
    pids = log.read_text().split()
    # Each of the 4 combinations ran once, and never in this process: the rows were computed by spawned workers.
    assert len(pids) == 4 and str(os.getpid()) not in pids and 1 <= len(set(pids)) <= 2
    assert spawned.rows == serial.rows and _bits(spawned) == _bits(serial)
    plan, _ = _plan_for("SmaCrossEvents", {"fast": [5], "slow": [20]})
    code = sweep_module._spawn_strategy(sweep_module.load_registry().get("PidEvents"))
    assert isinstance(code, StrategyCode) and not code.builtin
    assert code.sha256 == hashlib.sha256(pid_strategy.read_bytes()).hexdigest()
    assert sweep_module._spawn_strategy(plan.inputs.strategy_cls) is plan.inputs.strategy_cls  # a built-in by path


def test_cancel_stops_a_spawned_sweep_keeping_the_completed_rows(other_thread: None, pools: list[Executor]) -> None:
    grid = {"fast": [3, 5, 7, 9], "slow": [20, 40]}
    cancel = threading.Event()

    def stop_after_first(done: int, total: int) -> None:
        if done >= 1:
            cancel.set()

    part = sweep(
        "SmaCrossEvents", grid, workers=2, chunk_size=1, progress=stop_after_first, cancel=cancel, cache=False, **RANGE
    )
    assert _spawned(pools[0])
    # At most two chunks per worker were in flight when the first completed; none started after the cancel.
    assert part.cancelled and 1 <= part.evaluated <= 4 and len(part.rows) == part.evaluated
    full = sweep("SmaCrossEvents", grid, workers=1, cache=False, **RANGE)
    assert part.rows == [r for r in full.rows if r.index in {p.index for p in part.rows}]


def test_progress_of_a_spawned_sweep_counts_every_chunk(other_thread: None, pools: list[Executor]) -> None:
    seen: list[tuple[int, int]] = []
    sweep(
        "SmaCrossEvents", GRID, workers=2, chunk_size=1, progress=lambda d, t: seen.append((d, t)), cache=False, **RANGE
    )
    assert _spawned(pools[0])
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]


@pytest.mark.timeout(120)
def test_a_worker_process_that_dies_fails_the_sweep_with_a_clear_error(
    other_thread: None, pools: list[Executor], pid_strategy: Path
) -> None:
    with pytest.raises(sweep_module.SweepWorkerError, match="worker process died"):
        sweep("PidEvents", {"die": [False, True], "fast": [5, 10]}, workers=2, chunk_size=1, cache=False, **RANGE)
    assert _spawned(pools[0])


def test_spawning_is_chosen_only_when_the_sweep_repays_the_workers_start(
    other_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan, _ = _plan_for("SmaCrossEvents", {"fast": [5], "slow": [20]})
    assert isinstance(plan, EnginePlan)
    short = sweep_module._pool(plan, 2, 4)  # 4 combinations of 2,000 bars: far less than a worker's start
    assert isinstance(short, ThreadPoolExecutor)
    short.shutdown()
    # Enough bars x combinations: spawned processes (started on the first chunk, so none start here).
    long = sweep_module._pool(plan, 2, 10_000)
    assert _spawned(long)
    long.shutdown()
    vectorized, _ = _plan_for("SmaCross", {"fast": [5], "slow": [20]})
    kernels = sweep_module._pool(vectorized, 2, 10**9)
    assert isinstance(kernels, ThreadPoolExecutor)  # the compiled kernels release the GIL
    kernels.shutdown()
    # 1,000 combinations of 2,000 bars: worth it once the fork server runs warm, not when a first one must start.
    monkeypatch.setattr(sweep_module, "_server_started", False)
    cold = sweep_module._pool(plan, 2, 1_000)
    assert isinstance(cold, ThreadPoolExecutor)
    cold.shutdown()
    monkeypatch.setattr(sweep_module, "_server_started", True)
    warm = sweep_module._pool(plan, 2, 1_000)
    assert _spawned(warm)
    warm.shutdown()


def test_without_a_fork_server_the_workers_are_spawned_with_identical_rows(
    other_thread: None, pools: list[Executor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweep_module.multiprocessing, "get_all_start_methods", lambda: ["spawn"])  # as on Windows
    serial = sweep("SmaCrossEvents", GRID, metrics=ALL, workers=1, cache=False, **RANGE)
    spawned = sweep("SmaCrossEvents", GRID, metrics=ALL, workers=2, cache=False, **RANGE)
    assert isinstance(pools[0], ProcessPoolExecutor)
    assert pools[0]._mp_context.get_start_method() == "spawn"  # type: ignore[attr-defined]
    assert spawned.rows == serial.rows and _bits(spawned) == _bits(serial)


def test_the_fork_servers_warm_up_runs_a_backtest() -> None:
    warm = importlib.import_module("cracktrader.sweeps.warm")  # what the fork server imports before any worker forks
    warm.warm_engine(50)
