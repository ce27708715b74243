"""Browser benchmark: the results page of a 1 M-bar run, from navigation start to its `data-ready` mark.

A backtest of SmaCross on 1,000,000 synthetic one-minute bars (about 23 months) runs on a local server; its
results page (`/ui#/runs/{id}`) is then opened in headless Debian Chromium (Playwright, a fresh page each
time, the browser's HTTP cache left warm after the first load as a returning user's would be) and the time
from `performance.timeOrigin` to the page's `performance.mark("data-ready")` (set once the candle chart, the
equity chart and the first page of round trips are drawn) is read from the page itself. Target: < 2 s.
Not a timed test: run `python benchmarks/bench_ui_load.py` (needs /usr/bin/chromium and `playwright`).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_web import serve

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
RUN = {
    "mode": "backtest",
    "strategy_name": "SmaCross",
    "symbols": ["BTC/USDT"],
    "timeframe": "1m",
    "exchange": "synthetic",
    "start_date": "2022-01-01T00:00:00Z",
    "end_date": "2023-11-26T10:40:00Z",  # 1,000,000 one-minute bars after the start
    "initial_cash": 100_000.0,
    "commission": 0.0001,
}
LOADS = 5
TARGET_S = 2.0


def run_backtest(base: str) -> tuple[str, int, float]:
    """Start the 1 M-bar backtest and wait for it: its id, bars and seconds."""
    with httpx.Client(base_url=base, timeout=600) as c:
        t0 = time.perf_counter()
        r = c.post("/api/v1/runs", json=RUN)
        r.raise_for_status()
        run_id: str = r.json()["run_id"]
        while True:
            run = c.get(f"/api/v1/runs/{run_id}").json()
            if run["status"] in ("completed", "failed", "stopped"):
                break
            time.sleep(0.2)
        assert run["status"] == "completed", run
        bars = c.get(f"/api/v1/runs/{run_id}/candles", params={"max_points": 2}).json()["bars"]
        return run_id, int(bars), time.perf_counter() - t0


def measure(base: str, run_id: str) -> list[dict[str, Any]]:
    """Each load's navigation-to-data-ready time and what the page drew."""
    from playwright.sync_api import sync_playwright

    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as profile, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=ARGS, headless=True, viewport={"width": 1400, "height": 900}
        )
        try:
            for i in range(LOADS):
                page = ctx.new_page()
                requests: list[str] = []
                page.on("request", lambda r, reqs=requests: reqs.append(r.url))
                page.goto(f"{base}/ui#/runs/{run_id}")
                page.wait_for_selector("main[data-data-ready]", timeout=120_000)
                ms = page.evaluate("performance.getEntriesByName('data-ready')[0].startTime")
                candles = page.get_attribute("#candle-chart", "data-candles")
                api_calls = sum("/api/" in u for u in requests)
                out.append({"load": i + 1, "ms": ms, "candles": candles, "requests": len(requests), "api": api_calls})
                page.close()
        finally:
            ctx.close()
    return out


def main() -> None:
    data_dir = tempfile.mkdtemp(prefix="bench-ui-data-")
    with serve("cracktrader.web.app:create_app", factory=True, env={"CRACKTRADER_DATA_DIR": data_dir}) as base:
        run_id, bars, seconds = run_backtest(base)
        loads = measure(base, run_id)
    print(f"run {run_id}: {bars:,} bars backtested in {seconds:.1f} s (through the API)\n")
    print("| load | navigation to data-ready | candles drawn | requests (API) |")
    print("|---|---|---|---|")
    for x in loads:
        name = f"{x['load']} (cold)" if x["load"] == 1 else str(x["load"])
        print(f"| {name} | {x['ms']:.0f} ms | {x['candles']} | {x['requests']} ({x['api']}) |")
    warm = [x["ms"] for x in loads[1:]] or [loads[0]["ms"]]
    worst = max(x["ms"] for x in loads)
    print(
        f"\nmedian (warm) {statistics.median(warm):.0f} ms, worst {worst:.0f} ms; target < {TARGET_S * 1000:.0f} ms: "
        f"{'met' if worst < TARGET_S * 1000 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
