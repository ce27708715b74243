"""From a candle's close at the exchange to the strategy's orders in the paper book, over the real ccxt client.

.venv/bin/python benchmarks/bench_feed_latency.py            # about 30 seconds
.venv/bin/python benchmarks/bench_feed_latency.py --bars 300 --json out.json

The suite's fake Binance (tests/fakes/venue.py: REST and WebSocket on 127.0.0.1, on a virtual clock) lists 10
markets. A 10-symbol paper session (SmaCrossEvents on 1s candles, exchange `binance` pointed at the venue) runs
`prepare_paper` and `run_session` exactly as the server does: warmed from REST, then closed candles from ccxt
`watch_ohlcv`. Each bar, the benchmark moves the venue's clock one second past the candle's end (the moment the
candle closes at the exchange) and times, in wall-clock time, until the session's `on_bar` has the strategy's
orders in the book: the venue's pushes, the WebSocket, ccxt's parsing, the feed's close detection across all 10
symbols and the decision. Target: p99 < 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))
from bench_web import percentile  # noqa: E402
from benchlib import machine_info  # noqa: E402

from fakes.binance import FakeMarket  # noqa: E402
from fakes.venue import FakeVenue  # noqa: E402

BASES = ("BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE", "AVAX", "DOT", "LINK")
SYMBOLS = [f"{b}/USDT" for b in BASES]
T0 = 1_717_243_200_000  # 2024-06-01T12:00:00Z
SAFETY_S = 30.0  # a broken feed ends the benchmark instead of hanging it


async def measure(bars: int, data_dir: Path) -> dict[str, Any]:
    """Run the session for `bars` live bars; return wall-clock latencies (ms) from each close to orders booked."""
    from cracktrader.brokers.paper import PaperSession
    from cracktrader.data.feeds.base import BarBatch
    from cracktrader.runs.config import LiveConfig
    from cracktrader.runs.session import run_session
    from cracktrader.runs.trade import prepare_paper
    from cracktrader.settings import Settings

    with FakeVenue(now_ms=T0 + 500, markets=[FakeMarket(b) for b in BASES]) as venue:
        settings = Settings(data_dir=data_dir, exchange_options=venue.exchange_options())
        config = LiveConfig(
            strategy_name="SmaCrossEvents",
            strategy_params={"fast": 2, "slow": 5, "size": 0.01},
            symbols=SYMBOLS,
            timeframe="1s",
            exchange="binance",
        )
        plan = await asyncio.to_thread(prepare_paper, config, clock=venue.clock, settings=settings)
        booked: asyncio.Queue[float] = asyncio.Queue()

        def on_bar(_session: PaperSession, _batch: BarBatch) -> None:
            booked.put_nowait(time.perf_counter())

        task = asyncio.create_task(run_session(plan.session, plan.feed, history=plan.history, on_bar=on_bar))
        try:
            for s in SYMBOLS:
                await venue.wait_subscribed(f"{s.replace('/', '').lower()}@kline_1s", SAFETY_S)
            await venue.settled(SAFETY_S)
            await venue.step(0.5, SAFETY_S)  # the first live candle closes: not timed (the socket's first close)
            await asyncio.wait_for(booked.get(), SAFETY_S)
            latencies = []
            for _ in range(bars):
                began = time.perf_counter()
                venue.clock.advance(1.0)  # the candle closes at the exchange now
                done = await asyncio.wait_for(booked.get(), SAFETY_S)
                latencies.append((done - began) * 1000)
                await venue.settled(SAFETY_S)  # ccxt has read every push, so bars do not overlap
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await plan.feed.aclose()
        orders = len(plan.session.sim.rows)
        rest_klines = len(venue.requests_to("/api/v3/klines"))
    return {
        "symbols": len(SYMBOLS),
        "bars": bars,
        "orders": orders,
        "rest_kline_requests": rest_klines,
        "p50": statistics.median(latencies),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bars", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(f"machine: {machine_info()}")
    with tempfile.TemporaryDirectory(prefix="ct-bench-feed-") as tmp:
        out = asyncio.run(measure(args.bars, Path(tmp)))
    print("| benchmark | cracktrader | detail | target | pass |")
    print("|---|---|---|---|---|")
    print(
        f"| {out['symbols']}-symbol 1s candle close at the fake exchange -> orders in the paper book (ccxt "
        f"watch_ohlcv) | p99 {out['p99']:.2f} ms | p50 {out['p50']:.2f}, max {out['max']:.2f} ms over "
        f"{out['bars']:,} bars, {out['orders']:,} orders, {out['rest_kline_requests']} REST kline requests (warm-up "
        f"and fallback) | < 5 ms | {'PASS' if out['p99'] < 5 else 'FAIL'} |"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
