"""The suite's fake Binance in a process of its own, driven over stdin, for latency benchmarks.

A venue in the benchmark's own process would share its GIL: its thread's pushes would wait for ours (and ours for
its) up to the interpreter's 5 ms switch interval, which a real exchange on another machine never costs us.

    python benchmarks/venue_process.py NOW_MS BASE,BASE,...

prints `{"exchange_options": ...}`, then answers one JSON line per command line:
`advance MS` (move its virtual clock; answers once every due push is written, with the monotonic time of the
first push: `time.perf_counter()` is CLOCK_MONOTONIC on Linux, comparable across processes), `subscriptions`,
`requests PATH`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fakes.binance import FakeMarket
from fakes.venue import FakeVenue


def main() -> None:
    now_ms, bases = int(sys.argv[1]), sys.argv[2].split(",")
    with FakeVenue(now_ms=now_ms, markets=[FakeMarket(b) for b in bases]) as venue:
        pushed: list[float] = []
        send = venue._send

        async def timed_send(conn: Any, name: str, at_ms: int, message: dict[str, Any]) -> None:
            pushed.append(time.perf_counter())
            await send(conn, name, at_ms, message)

        venue._send = timed_send  # type: ignore[method-assign]
        print(json.dumps({"exchange_options": venue.exchange_options()}), flush=True)
        for line in sys.stdin:
            command, *args = line.split()
            answer: Any
            if command == "advance":
                pushed.clear()
                venue.advance(int(args[0]))
                first, last = (pushed[0], pushed[-1]) if pushed else (None, None)
                answer = {"first_push": first, "last_push": last, "pushes": len(pushed)}
            elif command == "subscriptions":
                answer = sorted(venue.subscriptions())
            elif command == "requests":
                answer = len(venue.requests_to(args[0]))
            else:
                answer = {"error": f"unknown command {command!r}"}
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
