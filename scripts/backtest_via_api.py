"""Run a backtest through a running Cracktrader server and print its summary (the README's main job)."""

from __future__ import annotations

import argparse
import sys
import time

import httpx

from cracktrader.cli import print_summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--strategy", default="SmaCross")
    parser.add_argument("--symbol", default="BTC/USDT")
    parser.add_argument("--timeframe", default="1h")
    parser.add_argument("--start", default="2024-01-01T00:00:00Z")
    parser.add_argument("--end", default="2025-01-01T00:00:00Z")
    parser.add_argument("--exchange", default="synthetic")
    args = parser.parse_args()
    api = f"{args.url}/api/v1"
    with httpx.Client(timeout=30) as http:
        deadline = time.monotonic() + 60
        while True:
            try:
                http.get(f"{api}/health").raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    print(f"error: no server answered at {args.url}", file=sys.stderr)
                    return 1
                time.sleep(0.2)
        http.delete(f"{api}/run/reset")
        body = {
            "strategy_name": args.strategy,
            "symbols": [args.symbol],
            "timeframe": args.timeframe,
            "start_date": args.start,
            "end_date": args.end,
            "exchange": args.exchange,
        }
        started = http.post(f"{api}/run/backtest", json=body)
        if started.status_code != 200:
            print(f"error: {started.json()['error']['message']}", file=sys.stderr)
            return 2
        print(f"started run {started.json()['run_id']}", file=sys.stderr)
        while (status := http.get(f"{api}/status").json())["status"] not in ("completed", "failed", "stopped"):
            time.sleep(0.05)
        if status["status"] != "completed":
            print(f"error: run {status['status']}: {status['error']}", file=sys.stderr)
            return 1
        print_summary(http.get(f"{api}/results").json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
