"""An event-driven sweep in a process with other threads: threads (the GIL) against spawned worker processes.

8 combinations of SmaCrossEvents on 200,000 one-minute synthetic bars, 2 workers. A helper thread stays alive
during the timed runs, as in Jupyter or a server, so forking is not safe; fork (timed before that thread starts)
and one process are the references. Interleaved repeats, medians reported; every run's rows must be equal. The
first forkserver run includes starting the fork server (once per process); spawn starts fresh workers every run.
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import statistics
import threading
import time
from datetime import date
from typing import Any

from cracktrader.sweeps import sweep

sweep_module = importlib.import_module("cracktrader.sweeps.sweep")  # the package exports a function of that name
GRID = {"fast": [5, 10, 15, 20], "slow": [40, 80]}
RANGE: dict[str, Any] = {
    "symbols": "BTC/USDT",
    "timeframe": "1m",
    "start": "2023-01-01",
    "end": "2023-05-19",  # about 200,000 bars
    "exchange": "synthetic",
}


def _timed(workers: int) -> tuple[float, list[Any]]:
    started = time.perf_counter()
    result = sweep("SmaCrossEvents", GRID, workers=workers, cache=False, **RANGE)
    return time.perf_counter() - started, result.rows


def _threads(workers: int) -> tuple[float, list[Any]]:
    """The fallback before spawn: no strategy can travel, so the pool is threads."""
    real = sweep_module._spawn_strategy
    sweep_module._spawn_strategy = lambda cls: None
    try:
        return _timed(workers)
    finally:
        sweep_module._spawn_strategy = real


def _processes(workers: int, methods: list[str] | None = None) -> tuple[float, list[Any]]:
    """Clean processes even where the sweep's estimated work would not repay their start; `methods` as if they were
    the only start methods (["spawn"]: no fork server, as on Windows)."""
    real_start, real_methods = sweep_module.SPAWN_START_SECONDS, multiprocessing.get_all_start_methods
    real_warm = sweep_module.WARM_START_SECONDS
    sweep_module.SPAWN_START_SECONDS = sweep_module.WARM_START_SECONDS = 0.0
    if methods is not None:
        multiprocessing.get_all_start_methods = lambda: methods  # type: ignore[assignment]
    try:
        return _timed(workers)
    finally:
        sweep_module.SPAWN_START_SECONDS, multiprocessing.get_all_start_methods = real_start, real_methods
        sweep_module.WARM_START_SECONDS = real_warm


def _forkserver(workers: int) -> tuple[float, list[Any]]:
    return _processes(workers)


def _spawn(workers: int) -> tuple[float, list[Any]]:
    return _processes(workers, ["spawn"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--end", default=RANGE["end"], help="last day of the one-minute bars from 2023-01-01")
    args = parser.parse_args()
    RANGE["end"] = args.end
    times: dict[str, list[float]] = {"one process": [], "fork": [], "threads": [], "forkserver": [], "spawn": []}
    _, reference = _timed(1)  # warm-up: data and compiled kernels
    for _ in range(args.repeat):
        for name in ("one process", "fork"):
            assert threading.active_count() == 1, "fork is only timed in a single-threaded process"
            seconds, rows = _timed(1 if name == "one process" else args.workers)
            assert rows == reference, name
            times[name].append(seconds)
        stop = threading.Event()
        other = threading.Thread(target=stop.wait, name="bench-other-thread")
        other.start()
        try:
            for name, run in (("threads", _threads), ("forkserver", _forkserver), ("spawn", _spawn)):
                seconds, rows = run(args.workers)
                assert rows == reference, name
                times[name].append(seconds)
        finally:
            stop.set()
            other.join()
    bars = (date.fromisoformat(args.end) - date(2023, 1, 1)).days * 1440 + 1440
    print(f"SmaCrossEvents, {len(reference)} combinations, {bars:,} one-minute bars, {args.workers} workers")
    for name, values in times.items():
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name:>12}: median {statistics.median(values):6.2f} s, best {min(values):6.2f} s  (runs: {runs})")


if __name__ == "__main__":
    main()
