"""The suite's fake Binance in a process of its own, driven over stdin, for latency benchmarks.

A venue in the benchmark's own process would share its GIL: its thread's pushes would wait for ours (and ours for
its) up to the interpreter's 5 ms switch interval, which a real exchange on another machine never costs us.

    python benchmarks/venue_process.py NOW_MS BASE,BASE,... [--trading] [--wall-clock]

prints `{"exchange_options": ...}`, then answers one JSON line per command line:
`advance MS` (move its virtual clock; answers once every due push is written, with the monotonic time of the
first push: `time.perf_counter()` is CLOCK_MONOTONIC on Linux, comparable across processes), `subscriptions`,
`requests PATH`.

`--trading` serves the trading venue (tests/fakes/trading.py: signed orders on an account with ample balances;
keys `test-key`/`test-secret`) and records, for each new-order request, the wall-clock time (`time.time_ns()`,
CLOCK_REALTIME: comparable across processes on one machine) at which it reached the server, before its body is
read. Commands: `arrivals` (`{client order id: ns}` since the last call), `open_orders` (how many are open).
`--wall-clock` moves the venue's clock with the wall clock (every 10 ms), so clients that sign with
their own wall clock (a `SystemClock`) are within the venue's receive window; NOW_MS is then ignored.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fakes.binance import FakeMarket, Handler
from fakes.trading import TradingVenue
from fakes.venue import FakeVenue

NEW_ORDER_PATH = "/api/v3/order"
# Enough quote and base currency that no benchmark runs out: the session's own capital is what limits it.
BENCH_BALANCES = {"USDT": "1000000000", "BTC": "1000", "ETH": "10000", "SOL": "100000", "BNB": "100000",
                  "XRP": "10000000"}  # fmt: skip
WALL_TICK_S = 0.01  # the signer may be this far ahead of the venue: far inside its 1 s allowance


class TimedTradingVenue(TradingVenue):
    """The trading venue, noting when each new-order request arrives (wall clock, ns) by its client order id."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrivals: dict[str, int] = {}

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        arrived = time.time_ns()  # first: before the body is read and before any other middleware runs
        if request.method == "POST" and request.path == NEW_ORDER_PATH:
            body = await request.text()  # aiohttp caches it: the handlers read it again for free
            params = dict(parse_qsl(request.query_string)) | dict(parse_qsl(body))
            cid = params.get("newClientOrderId")
            if cid:
                self.arrivals[cid] = arrived
        return await super()._middleware(request, handler)


def _follow_wall_clock(venue: FakeVenue, stop: threading.Event) -> None:
    """Keep the venue's virtual clock on the wall clock (it only moves forward)."""
    while not stop.wait(WALL_TICK_S):
        now = time.time_ns() // 1_000_000
        if now > venue.clock.now_ms():
            venue.clock.set(now)


def _answer(venue: FakeVenue, pushed: list[float], command: str, args: list[str]) -> Any:
    if command == "advance":
        pushed.clear()
        venue.advance(int(args[0]))
        first, last = (pushed[0], pushed[-1]) if pushed else (None, None)
        return {"first_push": first, "last_push": last, "pushes": len(pushed)}
    if command == "subscriptions":
        return sorted(venue.subscriptions())
    if command == "requests":
        return len(venue.requests_to(args[0]))
    if command == "arrivals" and isinstance(venue, TimedTradingVenue):
        out, venue.arrivals = venue.arrivals, {}
        return out
    if command == "open_orders" and isinstance(venue, TradingVenue):
        return len(venue.account.open_orders())
    return {"error": f"unknown command {command!r}"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("now_ms", type=int)
    parser.add_argument("bases")
    parser.add_argument("--trading", action="store_true", help="serve the trading venue (signed orders)")
    parser.add_argument("--wall-clock", action="store_true", help="move the venue's clock with the wall clock")
    args = parser.parse_args()
    now_ms = time.time_ns() // 1_000_000 if args.wall_clock else args.now_ms
    markets = [FakeMarket(b) for b in args.bases.split(",")]
    venue: FakeVenue
    if args.trading:
        venue = TimedTradingVenue(now_ms=now_ms, markets=markets, balances=dict(BENCH_BALANCES))
    else:
        venue = FakeVenue(now_ms=now_ms, markets=markets)
    stop = threading.Event()
    with venue:
        pushed: list[float] = []
        send = venue._send

        async def timed_send(conn: Any, name: str, at_ms: int, message: dict[str, Any]) -> None:
            pushed.append(time.perf_counter())
            await send(conn, name, at_ms, message)

        venue._send = timed_send  # type: ignore[method-assign]
        follower = threading.Thread(target=_follow_wall_clock, args=(venue, stop), daemon=True)
        if args.wall_clock:
            follower.start()
        print(json.dumps({"exchange_options": venue.exchange_options(), "base_url": venue.base_url}), flush=True)
        try:
            for line in sys.stdin:
                command, *rest = line.split()
                print(json.dumps(_answer(venue, pushed, command, rest)), flush=True)
        finally:
            stop.set()
            if follower.is_alive():
                follower.join()


if __name__ == "__main__":
    main()
