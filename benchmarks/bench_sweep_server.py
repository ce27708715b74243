"""Each vectorized built-in's 100-combination grid on a server: one sweep against one backtest at a time.

.venv/bin/python benchmarks/bench_sweep_server.py            # about 3 minutes
.venv/bin/python benchmarks/bench_sweep_server.py --only SmaCross --sample 20

What a user of the server does without sweeps (issue 13: "a user loops in Python, and the server runs one
backtest at a time"), against what they do with them, end to end over HTTP on one real `cracktrader serve` (fresh
data dir, SQLite) on a free loopback port, with the same 1,051,200 one-minute synthetic bars (2022-2023) in its
store, fee 0.01 %:

- one sweep: `POST /api/v1/sweeps` with the grid, then `GET /sweeps/{id}` every 50 ms until it ended (its rows
  ranked and stored);
- one backtest at a time: `DELETE /api/v1/run/reset` and `POST /api/v1/run/backtest` per combination, then
  `GET /status` every 50 ms until it ended (its results stored), the next one after that; `--sample`
  combinations spread over the grid are timed and the time scaled to the grid's size.

Both load the candles from the store and save what they produce; the sweep keeps a row of metrics per combination,
a backtest its whole results document (equity, orders, trades). `bench_sweep.py` times the same grids in-process
against `run_backtest` on candles already in memory (the engine alone).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_results_io import BIG_BARS, BIG_RUN, finished
from bench_sweep import BUILTIN_GRIDS
from bench_web import serve
from benchlib import FEE, INITIAL_CASH, format_columns, machine_info

TARGET_RATIO = 10.0
POLL_S = 0.05
ACTIVE = ("queued", "running")
BASE = {
    **{k: v for k, v in BIG_RUN.items() if k != "strategy_name"},
    "initial_cash": INITIAL_CASH,
    "commission": FEE,
}


def _combos(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The grid's combinations in order (those a strategy rejects are skipped by the server, counted here)."""
    (k1, v1), (k2, v2) = grid.items()
    return [{k1: a, k2: b} for a in v1 for b in v2]


def run_sweep(http: httpx.Client, strategy: str, grid: dict[str, list[Any]]) -> dict[str, Any]:
    """POST a sweep and poll it until it ended; (seconds from POST to seen ended, its document)."""
    t0 = time.perf_counter()
    r = http.post("/api/v1/sweeps", json={**BASE, "strategy_name": strategy, "grid": grid})
    r.raise_for_status()
    sweep_id = r.json()["sweep_id"]
    while True:
        doc = http.get(f"/api/v1/sweeps/{sweep_id}").json()
        if doc["status"] not in ACTIVE:
            break
        time.sleep(POLL_S)
    if doc["status"] != "completed":
        raise RuntimeError(f"sweep {sweep_id} of {strategy} ended {doc['status']}: {doc.get('error')}")
    return {"seconds": time.perf_counter() - t0, "combinations": doc["combinations"], "rows": doc["rows"]}


def run_backtest(http: httpx.Client, strategy: str, params: dict[str, Any]) -> float:
    """POST one backtest and poll `/status` until it ended and saved; seconds from POST to seen ended."""
    t0 = time.perf_counter()
    http.delete("/api/v1/run/reset")  # the slot's last run back to idle, as a loop over the v1 runner must
    r = http.post("/api/v1/run/backtest", json={**BASE, "strategy_name": strategy, "strategy_params": params})
    r.raise_for_status()
    while True:
        st = http.get("/api/v1/status").json()
        if finished(st) and st.get("run_id") == r.json()["run_id"]:
            break
        time.sleep(POLL_S)
    if st["status"] != "completed":
        raise RuntimeError(f"backtest of {strategy} {params} ended {st['status']}: {st.get('error')}")
    return time.perf_counter() - t0


def measure(base: str, strategies: list[str], sample: int) -> list[dict[str, Any]]:
    out = []
    with httpx.Client(base_url=base, timeout=600) as http:
        # Warm: the candles into the store, the worker process started with its kernels loaded.
        run_sweep(http, "SmaCross", {"fast": [5, 6], "slow": [300]})
        run_backtest(http, "SmaCross", {"fast": 5, "slow": 300})
        for strategy in strategies:
            grid = BUILTIN_GRIDS[strategy]
            sw = run_sweep(http, strategy, grid)
            combos = _combos(grid)
            # Only the combinations the strategy accepts (the sweep skips fast >= slow): each is one backtest.
            valid = [c for c in combos if not ("fast" in c and "slow" in c and c["fast"] >= c["slow"])]
            picked = valid[:: max(1, len(valid) // sample)][:sample]
            seconds = [run_backtest(http, strategy, params) for params in picked]
            serial = sum(seconds) / len(seconds) * sw["rows"]
            out.append({"strategy": strategy, "sweep": sw, "serial_s": serial, "per_backtest": seconds})
            print(f"{strategy}: sweep {sw['seconds']:.2f} s, {sw['rows']} rows; one backtest "
                  f"{min(seconds):.2f}-{max(seconds):.2f} s", flush=True)  # fmt: skip
    return out


def table(figures: list[dict[str, Any]]) -> str:
    cells = []
    for f in figures:
        ratio = f["serial_s"] / f["sweep"]["seconds"]
        cells.append(
            (
                f"{f['strategy']}: {f['sweep']['rows']} combos x {BIG_BARS:,} bars, over HTTP",
                f"{f['sweep']['seconds']:.2f} s",
                f"{f['serial_s']:.1f} s ({sum(f['per_backtest']) / len(f['per_backtest']):.2f} s each)",
                f"{ratio:.1f}x",
                f">= {TARGET_RATIO:.0f}x",
                "PASS" if ratio >= TARGET_RATIO else "FAIL",
            )
        )
    headers = ("benchmark", "one sweep", "one backtest at a time", "ratio", "target", "pass")
    return format_columns(headers, cells)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], help="a built-in's name (repeatable)")
    parser.add_argument("--sample", type=int, default=10, help="backtests timed per grid (scaled to the grid)")
    args = parser.parse_args()
    strategies = args.only or list(BUILTIN_GRIDS)
    print(f"machine: {machine_info()}", flush=True)
    data_dir = tempfile.mkdtemp(prefix="ct-bench-sweep-server-")
    env = {"CRACKTRADER_DATA_DIR": data_dir, "CRACKTRADER_SWEEP_CACHE_DIR": str(Path(data_dir) / "sweep-cache")}
    try:
        with serve("", env=env, cli=True) as base:
            figures = measure(base, strategies, args.sample)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print(table(figures))
    print(
        f"  - {machine_info()}; one `cracktrader serve` (fresh SQLite store), each figure from the POST to the poll "
        f"(every {POLL_S * 1000:.0f} ms) that saw it ended; one backtest at a time: {args.sample} combinations per "
        "grid timed, scaled to the grid's valid combinations"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
