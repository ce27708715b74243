"""Run events across processes: one publisher process, two receiving processes with 25 subscribers each.

.venv/bin/python benchmarks/bench_event_fanout.py                      # PostgreSQL NOTIFY and Redis, ~1 minute
.venv/bin/python benchmarks/bench_event_fanout.py --backend redis --events 20000 --rate 2000

The relay of issue 15 (runs/event_relay.py) end to end on the real services of this machine: the publisher appends
events to the log in PostgreSQL (a fresh database) and announces them (Redis pub/sub, or NOTIFY when no Redis),
`--batch` events per append (an executor batches what a run emits within a few ms), at `--rate` events a second
on a fixed schedule; each receiving process keeps one listener and one reader, and hands every event to its 25
subscribers in order. Figures: events a second delivered to all 50 subscribers (from the first publish to the last
delivery), and publish-to-receive latency over every (event, subscriber) pair, counted from the event's scheduled
publish time (open loop, so a stall counts in full). Not yet through WebSockets: the server's streams do not read
the relay yet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import format_columns, machine_info

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"
RUN_ID = "bench"
SUBSCRIBERS_PER_PROCESS = 25
TARGET_RATE = 1000.0
TARGET_P99_MS = 50.0


async def _admin(sql: str) -> None:
    from sqlalchemy import text

    from cracktrader.db.engine import make_engine

    engine = make_engine(f"{POSTGRES_URL}/test")
    try:
        async with engine.connect() as conn:
            await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(text(sql))
    finally:
        await engine.dispose()


async def _relay(url: str, backend: str, channel: str) -> tuple[Any, list[Any]]:
    from redis.asyncio import Redis

    from cracktrader.db.engine import make_engine
    from cracktrader.db.event_store import EventStore
    from cracktrader.notify import PostgresNotices, RedisNotices
    from cracktrader.runs.event_relay import EventRelay

    engine = make_engine(url)
    closers: list[Any] = [engine.dispose]
    if backend == "redis":
        client = Redis.from_url(REDIS_URL)
        closers.append(client.aclose)
        notices: Any = RedisNotices(client, channel)
    else:
        notices = PostgresNotices(engine, channel)
    relay = EventRelay(EventStore(engine), notices, queue_size=100_000, max_lag=10**9)
    await relay.start()
    return relay, closers


async def _receive(url: str, backend: str, channel: str, total: int, ready: Any, out: Any) -> None:
    relay, closers = await _relay(url, backend, channel)
    subs = [await relay.subscribe(RUN_ID, since=0) for _ in range(SUBSCRIBERS_PER_PROCESS)]
    ready.set()
    latencies: list[float] = []
    last = 0.0

    async def read(sub: Any) -> None:
        nonlocal last
        expected = 1
        for _ in range(total):
            item = await sub.get()
            assert item is not None and item.seq == expected, (item, expected)
            expected += 1
            now = time.time()
            latencies.append(now - item.event.payload["t"])
            last = max(last, now)

    await asyncio.gather(*(read(s) for s in subs))
    out.put({"latencies": latencies, "last": last})
    await relay.close()
    for close in closers:
        await close()


def _receiver(url: str, backend: str, channel: str, total: int, ready: Any, out: Any) -> None:
    asyncio.run(_receive(url, backend, channel, total, ready, out))


async def _publish(url: str, backend: str, channel: str, total: int, rate: float, batch: int) -> float:

    relay, closers = await _relay(url, backend, channel)
    start = await publish_on_schedule(relay, RUN_ID, "equity_update", total, rate, batch)
    await relay.close()
    for close in closers:
        await close()
    return start


async def publish_on_schedule(relay: Any, run_id: str, kind: str, total: int, rate: float, batch: int) -> float:
    """Publish `total` events of a run at `rate` a second, `batch` per append, open loop; returns the start time.

    Each event's payload carries `t`, its batch's scheduled publish time, which latencies are counted from."""
    from cracktrader.runs.events import Event

    start = time.time() + 0.2
    sent = 0
    while sent < total:
        n = min(batch, total - sent)
        due = start + (sent + n - 1) / rate  # the batch's last event's scheduled time
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await relay.publish(run_id, [Event(kind, {"run_id": run_id, "n": sent + i, "t": due}) for i in range(n)])
        sent += n
    return start


def measure(backend: str, total: int, rate: float, batch: int) -> dict[str, Any]:
    from cracktrader.db import migrate

    name = f"ct_bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = f"{POSTGRES_URL}/{name}"
    try:
        migrate.upgrade(url)
        channel = f"ct_bench_{uuid.uuid4().hex[:10]}"
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        readies = [ctx.Event() for _ in range(2)]
        procs = [ctx.Process(target=_receiver, args=(url, backend, channel, total, r, out)) for r in readies]
        for p in procs:
            p.start()
        for r in readies:
            if not r.wait(60):
                raise TimeoutError("a receiver did not start")
        start = asyncio.run(_publish(url, backend, channel, total, rate, batch))
        results = [out.get(timeout=300) for _ in procs]
        for p in procs:
            p.join(30)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return summarize(backend, total, start, results)


def summarize(backend: str, total: int, start: float, results: list[dict[str, Any]]) -> dict[str, Any]:
    """One row: events a second to every receiver and the latency percentiles over every (event, receiver) pair."""
    lat = sorted(x for r in results for x in r["latencies"])
    last = max(r["last"] for r in results)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000

    return {
        "backend": backend,
        "events": total,
        "deliveries": len(lat),
        "rate": total / (last - start),
        "p50": pct(0.50),
        "p99": pct(0.99),
        "max": lat[-1] * 1000,
    }


def arguments(doc: str, batch: int) -> argparse.Namespace:
    """The command line both fan-out benchmarks take."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", action="append", choices=["postgresql", "redis"], default=[])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="events a second, on a fixed schedule")
    parser.add_argument("--batch", type=int, default=batch, help="events per append")
    parser.add_argument("--json", type=Path)
    return parser.parse_args()


def report(rows: list[dict[str, Any]], args: argparse.Namespace, what: str, receivers: str) -> None:
    """Print the table (`what` names the receivers in each row) and write the rows to --json."""
    cells = [
        (
            f"{r['events']:,} events {what}, notices on {r['backend']}",
            f"{r['rate']:,.0f} events/s",
            f"{r['p50']:.1f} ms",
            f"{r['p99']:.1f} ms",
            f"{r['max']:.1f} ms",
            f">= {TARGET_RATE:,.0f}/s, p99 < {TARGET_P99_MS:.0f} ms",
            "PASS" if r["rate"] >= TARGET_RATE * 0.99 and r["p99"] < TARGET_P99_MS else "FAIL",
        )
        for r in rows
    ]
    print(format_columns(("benchmark", "delivered", "p50", "p99", "max", "target", "pass"), cells))
    print(
        f"  - {machine_info()}; published at {args.rate:,.0f} events/s in appends of {args.batch}, latency from "
        f"each event's scheduled publish time to its delivery, over every (event, {receivers}) pair"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def main() -> int:
    args = arguments(__doc__ or "", batch=5)
    rows = [measure(b, args.events, args.rate, args.batch) for b in args.backend or ["postgresql", "redis"]]
    report(rows, args, f"to 2 processes x {SUBSCRIBERS_PER_PROCESS} subscribers", "subscriber")
    return 0


if __name__ == "__main__":
    sys.exit(main())
