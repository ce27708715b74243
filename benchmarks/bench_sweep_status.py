"""`GET /api/v1/status` latency while a parameter sweep runs on the server (issue 13: p99 < 10 ms).

.venv/bin/python benchmarks/bench_sweep_status.py                  # about 2 minutes
.venv/bin/python benchmarks/bench_sweep_status.py --grid-slow 60:155:5 --json out.json --py-spy prof/

A real `cracktrader serve` (one uvicorn worker, a fresh data dir with SQLite and a fresh sweep cache) on a free
loopback port. A small sweep over the same 1,051,200 one-minute synthetic bars (2022-2023) first puts the candles
in the server's store and starts its worker; then a poller process sends `GET /api/v1/status` at 200 req/s on a
fixed schedule (open loop: latency counts from the scheduled send time, so a stalled event loop shows in full):

1. baseline: for `--baseline-seconds` with nothing running;
2. during a SmaCross sweep (`POST /api/v1/sweeps`, default grid fast 5..54 x slow 60..355 step 5: 3,000
   combinations) from the POST until `GET /sweeps/{id}` (read once a second) shows it ended.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_results_io import BIG_BARS, BIG_RUN, POLL_RATE, Profiler, Sample, latency_stats, server_pid, status_poller
from bench_web import serve
from benchlib import format_columns, machine_info

TARGET_P99_MS = 10.0
SWEEP_POLL_S = 1.0  # how often GET /sweeps/{id} is read while the sweep runs
ACTIVE = ("queued", "running")
SWEEP = {
    **{k: v for k, v in BIG_RUN.items() if k != "strategy_name"},
    "strategy_name": "SmaCross",
    "metrics": ["total_return", "sharpe_ratio", "max_drawdown", "total_trades"],
}
WARM_GRID = {"fast": [5, 6], "slow": [300]}


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def thread_niceness(parent: int) -> dict[int, list[int]]:
    """The nice value of every thread of each child process of `parent` (Linux keeps one per thread)."""
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) != parent:
                continue
            tasks = (entry / "task").iterdir()
            out[int(entry.name)] = sorted(int((t / "stat").read_text().rsplit(")", 1)[1].split()[16]) for t in tasks)
        except (OSError, ValueError):
            continue
    return out


def run_sweep(
    http: httpx.Client, grid: dict[str, Any], timeout: float = 1800, during: Callable[[], object] | None = None
) -> dict[str, Any]:
    """POST a sweep and read it once every SWEEP_POLL_S until it ended (calling `during` while it runs); its
    document and when it was seen how."""
    posted = time.monotonic()
    r = http.post("/api/v1/sweeps", json={**SWEEP, "grid": grid})
    r.raise_for_status()
    sweep_id = r.json()["sweep_id"]
    running: list[float] = []
    while time.monotonic() - posted < timeout:
        doc = http.get(f"/api/v1/sweeps/{sweep_id}").json()
        if doc["status"] == "running":
            running.append(time.monotonic())
            if during is not None:
                during()
        if doc["status"] not in ACTIVE:
            break
        time.sleep(SWEEP_POLL_S)
    else:
        raise TimeoutError(f"sweep {sweep_id} did not end in {timeout:.0f} s")
    ended = time.monotonic()
    started, finished = doc["started_at"], doc["ended_at"]
    server_s = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    return {"doc": doc, "posted": posted, "ended": ended, "running": running, "server_s": server_s}


def measure(base: str, grid: dict[str, str], baseline_s: float, profile_dir: Path | None) -> dict[str, Any]:
    f: dict[str, Any] = {"load_start": load_average()}
    pid = server_pid()
    prof = Profiler(pid, profile_dir)
    with httpx.Client(base_url=base, timeout=60) as http:
        # Warm: the 1M bars into the server's store, its worker process started with the kernels loaded.
        warm = run_sweep(http, WARM_GRID)
        f["warm"] = {"status": warm["doc"]["status"], "seconds": round(warm["ended"] - warm["posted"], 1)}
        with status_poller(base) as idle:
            time.sleep(baseline_s)
        f["load_baseline"] = load_average()
        with status_poller(base) as samples, prof.block("sweep"):
            run = run_sweep(http, grid, during=lambda: f.setdefault("niceness", thread_niceness(pid)))
        f["load_end"] = load_average()
    doc = run["doc"]
    f["baseline"] = latency_stats(idle)
    f["sweep"] = latency_stats(samples, run["posted"], run["ended"])
    running = run["running"]
    f["running"] = latency_stats(samples, running[0], running[-1]) if running else latency_stats([])
    # Its end: the rows come back from the worker, are ranked and saved (from the last poll that saw it running).
    f["ending"] = latency_stats(samples, running[-1], run["ended"]) if running else latency_stats([])
    f["sweep_doc"] = {k: doc[k] for k in ("sweep_id", "status", "combinations", "evaluated", "rows", "started_at",
                                          "ended_at")}  # fmt: skip
    f["sweep_server_s"] = run["server_s"]
    f["sweep_wall_s"] = run["ended"] - run["posted"]
    f["slowest"] = _slowest(samples, run["posted"], run["ended"])
    f["slowest_baseline"] = _slowest(idle, min((s.scheduled for s in idle), default=0.0), float("inf"))
    return f


def _slowest(samples: list[Sample], start: float, end: float, n: int = 5) -> list[tuple[float, float]]:
    """The `n` worst stalls of a window: (seconds after its start, latency ms) of the slowest request of each
    (the requests a stall held are answered together: one per half second is listed)."""
    window = sorted((s for s in samples if s.scheduled <= end and s.answered >= start), key=lambda s: -s.latency_ms)
    worst: list[Sample] = []
    for s in window:
        if len(worst) == n:
            break
        if all(abs(s.answered - w.answered) > 0.5 for w in worst):
            worst.append(s)
    return [(round(s.scheduled - start, 2), round(s.latency_ms, 1)) for s in worst]


def table(f: dict[str, Any], grid: dict[str, str]) -> str:
    doc = f["sweep_doc"]
    grid_text = " x ".join(f"{k} {v}" for k, v in grid.items())
    sweep_text = (
        f"{doc['combinations']:,} combinations {doc['status']} in {f['sweep_server_s']:.1f} s "
        f"({f['sweep_wall_s']:.1f} s POST to seen ended)"
    )
    rows = [
        (f"`/status` at {POLL_RATE} req/s, no sweep (baseline)", f["baseline"], "-", f["load_baseline"]),
        (f"`/status` at {POLL_RATE} req/s during a SmaCross sweep ({grid_text}) on {BIG_BARS:,} 1m bars",
         f["sweep"], sweep_text, f["load_end"]),
        ("  the same, while it read as running", f["running"], "-", f["load_end"]),
    ]  # fmt: skip
    cells = [
        (name, f"{st['p50']:.1f} ms", f"{st['p99']:.1f} ms", f"{st['max']:.1f} ms", f"{st['n']:,}", sweep, load,
         f"< {TARGET_P99_MS:.0f} ms", "PASS" if st["p99"] < TARGET_P99_MS else "FAIL")
        for name, st, sweep, load in rows
    ]  # fmt: skip
    headers = ("benchmark", "p50", "p99", "max", "requests", "sweep", "load average after", "p99 target", "pass")
    return format_columns(headers, cells)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid-fast", default="5:54:1", help="start:end:step of SmaCross fast (default 5:54:1)")
    parser.add_argument("--grid-slow", default="60:355:5", help="start:end:step of SmaCross slow (default 60:355:5)")
    parser.add_argument("--baseline-seconds", type=float, default=15.0)
    parser.add_argument("--niceness", type=int, help="the server's CRACKTRADER_BACKTEST_NICENESS (default: its own)")
    parser.add_argument("--py-spy", type=Path, metavar="DIR", help="also profile the server during the sweep")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()
    grid = {"fast": args.grid_fast, "slow": args.grid_slow}
    print(f"machine: {machine_info()}", flush=True)
    data_dir = tempfile.mkdtemp(prefix="ct-bench-sweep-status-")
    env = {"CRACKTRADER_DATA_DIR": data_dir, "CRACKTRADER_SWEEP_CACHE_DIR": str(Path(data_dir) / "sweep-cache")}
    if args.niceness is not None:
        env["CRACKTRADER_BACKTEST_NICENESS"] = str(args.niceness)
    try:
        with serve("", env=env, cli=True) as base:
            figures = measure(base, grid, args.baseline_seconds, args.py_spy)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print(table(figures, grid))
    print(f"  - warm-up sweep (the 1M bars into the store, the worker started): {figures['warm']}")
    print(f"  - worst stalls of /status during the sweep (s after the POST, ms): {figures['slowest']}")
    end = figures["ending"]
    print(f"  - its end (last seen running to seen ended: rows ranked and saved): max {end['max']:.1f} ms, p50 "
          f"{end['p50']:.1f} ms, {end['n']} requests")  # fmt: skip
    print(f"  - worst stalls of the baseline (s after its start, ms): {figures['slowest_baseline']}")
    print(f"  - nice values of the server's child processes' threads during the sweep (pid: threads): "
          f"{figures.get('niceness')}; the server runs at {os.getpriority(os.PRIO_PROCESS, 0)}")  # fmt: skip
    print(
        f"  - load average at start {figures['load_start']}, after the baseline {figures['load_baseline']}, after the "
        f"sweep {figures['load_end']}; one `cracktrader serve` (its sweep in a worker process at lower priority), "
        f"the {POLL_RATE} req/s poller process and this process share {os.cpu_count()} cores"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
