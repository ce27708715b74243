"""Paper sessions: decision latency, many sessions at once, and `/status` while they and a backtest run.

.venv/bin/python benchmarks/bench_sessions.py            # about 2 minutes
.venv/bin/python benchmarks/bench_sessions.py --seconds 20 --json out.json
.venv/bin/python benchmarks/bench_sessions.py --only status   # part 3 alone, about a minute

1. In process: a 10-symbol `PaperSession` (SmaCrossEvents) fed 1s candles; time from a bar's candles arriving to
   the strategy's orders being in the paper book (`on_bar`), p50/p99/max over 3,000 bars. Target p99 < 5 ms.
2. One uvicorn worker (SQLite, fresh data dir) running 50 paper sessions of 1s synthetic candles at once
   (`POST /api/v1/runs`), for `--seconds`: each session's decision lag (candle close to decision done, measured
   by the server's clock, `/runs/{id}/status` decision_lag_ms). Target: every session acts on every candle within
   1 s of its close (max < 1,000 ms, and no missed bars).
3. The same server with 10 sessions and two 1,051,200-bar backtests at once (one in the runner slot, one by id
   through `POST /api/v1/runs`; both in the worker pool's processes): `/status` p50/p99/max from a 200 req/s
   open-loop poller process. Target p99 < 10 ms.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_results_io import BIG_RUN, latency_stats, status_poller
from bench_web import percentile, serve
from benchlib import machine_info

SYMBOLS_10 = [f"{base}/USDT" for base in ("BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE", "AVAX", "DOT", "LINK")]
# A Python strategy called on every one of the 1,051,200 bars: the runs that would hold the API's GIL in a thread.
EVENT_RUN = {**BIG_RUN, "strategy_name": "SmaCrossEvents"}
SESSION = {"strategy_name": "SmaCross", "symbols": ["BTC/USDT"], "timeframe": "1s", "exchange": "synthetic",
           "mode": "paper"}  # fmt: skip


def in_process_latency(bars: int = 3000) -> dict[str, float]:
    """Arrival of a 10-symbol bar to orders in the book, in process."""
    from cracktrader.brokers.paper import PaperSession
    from cracktrader.data.feeds.base import batches
    from cracktrader.data.sources.synthetic import generate
    from cracktrader.data.timeframes import parse_timeframe
    from cracktrader.engine.broker import SimSettings
    from cracktrader.strategies.builtin import SmaCrossEvents

    tf = parse_timeframe("1s")
    end = 1_767_225_600_000
    candles = {s: generate(s, tf, end - bars * tf.ms, end, end) for s in SYMBOLS_10}
    session = PaperSession(SmaCrossEvents(size=0.1), tuple(SYMBOLS_10), SimSettings(), tf.periods_per_year)
    times = []
    for batch in batches(candles):
        began = time.perf_counter()
        session.on_bar(batch.timestamp, batch.candles)
        times.append((time.perf_counter() - began) * 1000)
    fills = sum(1 for r in session.sim.rows if r[6] == 1.0)
    return {"bars": len(times), "fills": fills, "p50": statistics.median(times), "p99": percentile(times, 0.99),
            "max": max(times)}  # fmt: skip


def many_sessions(base: str, n: int, seconds: float) -> dict[str, Any]:
    """Start `n` 1s sessions, let them run, read every session's decision lag and bar count, stop them."""
    with httpx.Client(base_url=base, timeout=30) as c:
        ids = []
        for _ in range(n):
            r = c.post("/api/v1/runs", json=SESSION)
            r.raise_for_status()
            ids.append(r.json()["run_id"])
        time.sleep(seconds)
        statuses = [c.get(f"/api/v1/runs/{i}/status").json() for i in ids]
        for i in ids:
            c.post(f"/api/v1/runs/{i}/stop")
    lags = [s["decision_lag_ms"] for s in statuses if s["decision_lag_ms"]]
    bars = [s["bars_processed"] for s in statuses]
    return {
        "sessions": n,
        "seconds": seconds,
        "bars_min": min(bars),
        "bars_max": max(bars),
        "lag_p99_worst": max(lag["p99"] for lag in lags),
        "lag_max_worst": max(lag["max"] for lag in lags),
        "lag_p50_median": statistics.median(lag["p50"] for lag in lags),
    }


def status_under_load(base: str, sessions: int) -> dict[str, Any]:
    """`/status` latency while `sessions` 1s sessions and two 1M-bar backtests run at once."""
    with httpx.Client(base_url=base, timeout=60) as c:
        # A server that has been up a while: its worker processes have started and loaded their kernels, and the
        # candles are in its store (writing 1M bars there holds the store's lock, which sessions' appends wait on).
        warm = c.post("/api/v1/runs", json={**BIG_RUN, "mode": "backtest"}).json()["run_id"]
        while c.get(f"/api/v1/runs/{warm}/status").json()["status"] in ("starting", "running"):
            time.sleep(0.2)
        ids = [c.post("/api/v1/runs", json=SESSION).json()["run_id"] for _ in range(sessions)]
        time.sleep(3.0)  # the sessions have started and warmed up (that costs ~200 ms of the loop once): running now
        with status_poller(base) as samples:
            began = time.monotonic()
            c.post("/api/v1/run/backtest", json=EVENT_RUN).raise_for_status()
            by_id = c.post("/api/v1/runs", json={**EVENT_RUN, "mode": "backtest"})
            by_id.raise_for_status()
            other = by_id.json()["run_id"]
            both: list[float] = []  # when both were seen simulating
            while True:
                slot = c.get("/api/v1/status").json()
                second = c.get(f"/api/v1/runs/{other}/status").json()
                if slot["phase"] == "simulating" and second["phase"] == "simulating":
                    both.append(time.monotonic())
                if slot["status"] not in ("starting", "running") and second["status"] not in ("starting", "running"):
                    break
                time.sleep(0.2)
            ran = time.monotonic() - began
        for i in ids:
            c.post(f"/api/v1/runs/{i}/stop")
    stats = latency_stats(samples)
    slowest = sorted(samples, key=lambda x: -x.latency_ms)[:5]
    slow = [(round(x.scheduled - began, 2), round(x.latency_ms), x.status, x.phase) for x in slowest]
    print("slowest /status (s after start, ms, status, phase):", slow)
    during = latency_stats(samples, both[0], both[-1]) if both else {"p99": float("nan"), "n": 0}
    return {"sessions": sessions, "backtests": 2, "backtest_s": round(ran, 1), "concurrent": bool(both),
            "both_simulating_s": round(both[-1] - both[0], 1) if both else 0.0, "during": during,
            "outcomes": [slot["status"], second["status"]], **stats}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", choices=("status",), help="Run only part 3 (/status under load)")
    args = parser.parse_args()
    print(f"machine: {machine_info()}")
    out: dict[str, Any] = {} if args.only else {"in_process": in_process_latency()}
    data_dir = tempfile.mkdtemp(prefix="ct-bench-sessions-")
    env = {"CRACKTRADER_DATA_DIR": data_dir, "CRACKTRADER_MAX_LIVE_SESSIONS": str(args.sessions + 10)}
    try:
        with serve("cracktrader.web.app:create_app", factory=True, env=env) as base:
            if not args.only:
                out["many"] = many_sessions(base, args.sessions, args.seconds)
            out["status"] = status_under_load(base, 10)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    st = out["status"]
    status_row = (
        f"/status during {st['sessions']} sessions + two 1,051,200-bar SmaCrossEvents backtests ({st['backtest_s']} s"
        f" from start to both saved, both simulating for {st['both_simulating_s']} s, {'/'.join(st['outcomes'])})",
        f"p99 {st['p99']:.1f} ms", f"p50 {st['p50']:.1f}, max {st['max']:.1f} ms, {st['n']} requests; while both "
        f"simulated p99 {st['during']['p99']:.1f} ms ({st['during']['n']} requests)", "< 10 ms", st["p99"] < 10,
    )  # fmt: skip
    rows = [status_row] if args.only else [*_rows(out), status_row]
    print("| benchmark | cracktrader | detail | target | pass |")
    print("|---|---|---|---|---|")
    for name, value, detail, target, ok in rows:
        print(f"| {name} | {value} | {detail} | {target} | {'PASS' if ok else 'FAIL'} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


def _rows(out: dict[str, Any]) -> list[tuple[str, str, str, str, bool]]:
    ip, many = out["in_process"], out["many"]
    return [
        ("10-symbol 1s bar -> orders in the paper book (in process)", f"p99 {ip['p99']:.2f} ms",
         f"p50 {ip['p50']:.2f}, max {ip['max']:.2f} ms over {ip['bars']:,} bars, {ip['fills']:,} fills", "< 5 ms",
         ip["p99"] < 5),
        (f"{many['sessions']} sessions of 1s candles for {many['seconds']:.0f} s: candle close -> decision",
         f"worst max {many['lag_max_worst']:.0f} ms",
         f"worst p99 {many['lag_p99_worst']:.0f} ms, median p50 {many['lag_p50_median']:.0f} ms; bars "
         f"{many['bars_min']}-{many['bars_max']} per session", "< 1,000 ms", many["lag_max_worst"] < 1000),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
