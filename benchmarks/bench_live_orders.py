"""The live order path against the fake Binance in another process: latency, sustained rate, reconciliation.

.venv/bin/python benchmarks/bench_live_orders.py                     # about 7 minutes
.venv/bin/python benchmarks/bench_live_orders.py --orders 200 --seconds 10 --backends sqlite   # a quick look
.venv/bin/python benchmarks/bench_live_orders.py --loop asyncio       # the standard library's loop (default: uvloop,
                                                                      # what uvicorn runs the server's sessions on)

Everything is the production path: `LiveSession` (strategy, risk gate with its default limits) -> `LiveOrders`
(local checks, the fenced `pending_new` write, the send) -> `OrderCalls` -> ccxt.pro binance (from
`make_async_exchange`, throttle ON: `enableRateLimit` and binance's own `rateLimit`) -> the suite's fake venue
(tests/fakes/trading.py `TradingVenue`, signed REST on 127.0.0.1) in its own process, on the wall clock. The store
is a fresh SQLite file (WAL, synchronous=NORMAL) or a fresh schema in the PostgreSQL at 127.0.0.1:5432.

1. latency: a 5-symbol session on 1s bars, a strategy that buys one symbol at market on every bar, a bar
   `--interval-ms` after the last (120: under the gate's 10 orders/s). Timed from the call of `LiveSession.on_bar`
   with the closing candle to the new-order request leaving the process, stamped in process when aiohttp has
   written its body (`TraceConfig.on_request_chunk_sent` of the ccxt client's session, `time.time_ns`); also to
   its arrival at the venue process (`time.time_ns` there, CLOCK_REALTIME on one machine). Target p99 < 5 ms.
2. sustained: the same session buys 2 of each symbol at market on every bar, one bar a second, for `--seconds`:
   10 orders/s, exactly the risk gate's default (10 in any sliding second, by its ms clock): a bar comes at least
   1,000 ms after the previous bar's orders were checked, else the gate refuses some of the bar (a timer waking
   a fraction of a ms early cost 5 of a bar's 10 once). Backlog = orders decided (in a bar's outbox) but not yet
   written out. Target: 10/s, every order sent within its second, no backlog left at any bar.
3. reconcile: 100 resting limit buys (half the market price) on 5 symbols, placed and stored; then a restart: a
   new ccxt client (throttle ON), the rows loaded and restored into new `LiveOrders`, and
   `LiveRuntime.reconcile(start=True)` (each order looked up by client id, open orders and trades per symbol).
   Target < 15 s.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import aiohttp  # noqa: E402
from bench_feed_latency import Venue, loop_factory  # noqa: E402
from bench_web import percentile  # noqa: E402
from benchlib import machine_info  # noqa: E402

from cracktrader.brokers.live import LiveOrders, OrderIntent  # noqa: E402
from cracktrader.brokers.live_session import LiveSession  # noqa: E402
from cracktrader.brokers.orders import OrderStatus  # noqa: E402
from cracktrader.brokers.risk import RiskGate, parse_risk_limits  # noqa: E402
from cracktrader.clock import SystemClock  # noqa: E402
from cracktrader.data.feeds.base import ClosedCandle  # noqa: E402
from cracktrader.db.engine import make_engine  # noqa: E402
from cracktrader.db.live_store import LiveOrderStore  # noqa: E402
from cracktrader.db.migrate import upgrade  # noqa: E402
from cracktrader.db.run_store import RunStore  # noqa: E402
from cracktrader.db.session_store import SessionStore  # noqa: E402
from cracktrader.engine.broker import SimSettings  # noqa: E402
from cracktrader.engine.context import Context  # noqa: E402
from cracktrader.engine.strategy import Strategy, StrategyParams  # noqa: E402
from cracktrader.exchanges.client_ids import session_tag  # noqa: E402
from cracktrader.exchanges.markets import rules_from_market  # noqa: E402
from cracktrader.exchanges.order_calls import OrderCalls, RateGate  # noqa: E402
from fakes.binance import candle  # noqa: E402

BASES = ("BTC", "ETH", "SOL", "BNB", "XRP")  # the fake's three markets and two more for the benchmark
SYMBOLS = tuple(f"{b}/USDT" for b in BASES)
ORDER_PATH = "/api/v3/order"
BAR_MS = 1_000
NOTIONAL = 12.0  # quote per order: over binance's (the fake's) 5 USDT minimum after rounding the amount
POSTGRES_URL = os.environ.get("CRACKTRADER_TEST_POSTGRES_URL", "postgresql+asyncpg://root@127.0.0.1:5432/test")
SAFETY_S = 30.0


# ---------------------------------------------------------------- the workload


class BuyParams(StrategyParams):
    """How many market buys the benchmark strategy sends each bar."""

    symbols_per_bar: int = 1
    per_symbol: int = 1


class BuyEveryBar(Strategy):
    """Buy NOTIONAL of `symbols_per_bar` symbols (rotating), `per_symbol` times each, at market on every bar."""

    Params = BuyParams

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.bar = 0

    def warmup(self) -> int:
        return 1

    def on_bar(self, ctx: Context) -> None:
        p: BuyParams = self.params  # type: ignore[assignment]
        symbols = list(ctx.symbols)
        for k in range(p.symbols_per_bar):
            symbol = symbols[(self.bar + k) % len(symbols)]
            for _ in range(p.per_symbol):
                ctx.buy(symbol, NOTIONAL / ctx.price(symbol))
        self.bar += 1


def closed(symbol: str, open_ms: int) -> ClosedCandle:
    """The fake's 1s candle of `symbol` opening at `open_ms`."""
    _, o, h, low, c, v = candle(symbol, "1s", open_ms)
    return ClosedCandle(o, h, low, c, v)


# ---------------------------------------------------------------- stamps


@dataclass
class Stamps:
    """Wall-clock ns of each order's milestones, by client order id (and the bar's start by order number)."""

    written: dict[str, int] = field(default_factory=dict)  # aiohttp wrote the new-order body (left the process)
    db: dict[str, tuple[int, int]] = field(default_factory=dict)  # the pending_new write: start, end

    def trace_config(self) -> aiohttp.TraceConfig:
        """An aiohttp trace that stamps each new-order request when its body has been written to the socket."""
        config = aiohttp.TraceConfig()

        async def chunk_sent(_s: Any, _ctx: Any, params: aiohttp.TraceRequestChunkSentParams) -> None:
            now = time.time_ns()
            if params.method == "POST" and params.url.path == ORDER_PATH:
                cid = dict(parse_qsl(params.chunk.decode())).get("newClientOrderId")
                if cid:
                    self.written[cid] = now

        config.on_request_chunk_sent.append(chunk_sent)
        return config


def timed_store(store: LiveOrderStore, stamps: Stamps) -> None:
    """Stamp the start and end of each pending_new write."""
    insert = store.insert_pending

    async def timed(run_id: str, token: int, order: Any, **kw: Any) -> None:
        t0 = time.time_ns()
        await insert(run_id, token, order, **kw)
        stamps.db[order.client_order_id] = (t0, time.time_ns())

    store.insert_pending = timed  # type: ignore[method-assign]


# ---------------------------------------------------------------- databases


@asynccontextmanager
async def database(backend: str, folder: Path) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A fresh database migrated to head: (url, connect_args). PostgreSQL: a new schema, dropped afterwards."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{(folder / f'{uuid.uuid4().hex[:8]}.db').as_posix()}"
        await asyncio.to_thread(upgrade, url)
        yield url, {}
        return
    from sqlalchemy import text

    schema = f"ct_bench_{uuid.uuid4().hex[:12]}"
    admin = make_engine(POSTGRES_URL)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        args = {"server_settings": {"search_path": schema}}
        await asyncio.to_thread(upgrade, POSTGRES_URL, connect_args=args)
        yield POSTGRES_URL, args
    finally:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await admin.dispose()


# ---------------------------------------------------------------- the live path


@dataclass
class Path_:
    """One live session's order path on the venue, as LiveRuntime wires it."""

    session: LiveSession
    orders: LiveOrders
    calls: OrderCalls
    store: LiveOrderStore
    client: Any
    engine: Any
    stamps: Stamps
    run_id: str
    token: int


def client_for(venue: Venue, stamps: Stamps) -> Any:
    """ccxt.pro binance as the runtime makes it (`make_async_exchange`), throttle ON, its session traced."""
    from cracktrader.data.sources.ccxt_source import make_async_exchange
    from cracktrader.settings import Settings

    entry = {
        "base_url": venue.base_url,
        "config": {"apiKey": "test-key", "secret": "test-secret", "timeout": 5_000, "enableRateLimit": True},
        "options": {"fetchOpenOrders": {"warnWithoutSymbol": False}},
    }
    client = make_async_exchange("binance", Settings(exchange_options={"binance": entry}))
    assert client.enableRateLimit and client.rateLimit == 50, "binance's own throttle must be on"
    # ccxt's open() keeps a session it is given (and closes it in close()); this one carries the trace.
    client.session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(enable_cleanup_closed=True), trust_env=client.aiohttp_trust_env,
        trace_configs=[stamps.trace_config()],
    )  # fmt: skip
    return client


@asynccontextmanager
async def live_path(
    venue: Venue, db: tuple[str, dict[str, Any]], strategy: Strategy, *, capital: float, run_id: str | None = None
) -> AsyncIterator[Path_]:
    clock = SystemClock()
    engine = make_engine(db[0], connect_args=db[1])
    stamps = Stamps()
    client = client_for(venue, stamps)
    run_id = run_id or uuid.uuid4().hex
    store: LiveOrderStore | None = None
    try:
        await RunStore(engine).create(run_id=run_id, mode="live", status="running", config={},
                                      strategy_name=strategy.name, symbols=list(SYMBOLS), timeframe="1s",
                                      exchange="binance")  # fmt: skip
        token = await SessionStore(engine).create(run_id, server_id="bench", start_time=datetime.now(UTC).isoformat(),
                                                  now=datetime.now(UTC))  # fmt: skip
        calls = OrderCalls(client, "binance", clock, RateGate(clock))
        markets = await client.load_markets()
        rules = {s: rules_from_market(markets[s], int(client.precisionMode), default_fee=0.001) for s in SYMBOLS}
        session = LiveSession(
            strategy, SYMBOLS, SimSettings(initial_cash=capital), 365 * 86_400.0,
            risk=RiskGate(parse_risk_limits(None), clock.now_ms), timeframe_ms=BAR_MS,
        )  # fmt: skip
        open_ms = clock.now_ms() // BAR_MS * BAR_MS - 2 * BAR_MS
        warm = {s: closed(s, open_ms) for s in SYMBOLS}
        session.warm(open_ms, warm)
        store = LiveOrderStore(engine)
        await store.hold()  # as LiveRuntime.open does
        timed_store(store, stamps)
        orders = LiveOrders(run_id=run_id, token=lambda: token, exchange="binance", tag=session_tag(run_id),
                            calls=calls, store=store, clock=clock, portfolio=session, rules=rules)  # fmt: skip
        session.orders = orders
        orders.last_prices.update((s, c.close) for s, c in warm.items())
        yield Path_(session, orders, calls, store, client, engine, stamps, run_id, token)
    finally:
        await client.close()
        if store is not None:
            await store.close()
        await engine.dispose()


class Pump:
    """LiveRuntime.pump: each intent of the bar's outbox becomes a task (its own turn on the loop)."""

    def __init__(self, orders: LiveOrders) -> None:
        self.orders = orders
        self.tasks: set[asyncio.Task[Any]] = set()
        self.errors: list[BaseException] = []

    def send(self, intents: list[OrderIntent]) -> None:
        for intent in intents:
            task = asyncio.create_task(self.orders.place(intent))
            self.tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(task.exception())  # type: ignore[arg-type]

    async def settle(self) -> None:
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=SAFETY_S)


def ms(ns: int) -> float:
    return ns / 1e6


def spread(values: list[float]) -> dict[str, float]:
    """p50, p99 and max of `values` (ms)."""
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan"), "n": 0}
    return {"p50": statistics.median(values), "p99": percentile(values, 0.99), "max": max(values), "n": len(values)}


async def bar_loop(
    path: Path_,
    venue: Venue,
    bars: int,
    interval_ms: int,
    *,
    on_bar_done: Callable[[int, int], None] | None = None,
    keep_rate: bool = False,
) -> tuple[dict[str, int], dict[str, Any]]:
    """Feed `bars` closed 1s bars and send their orders; returns each order's bar-start ns by client id, and the
    venue's arrival ns by client id.

    Bars come `interval_ms` after the previous one was decided, or with `keep_rate` on a fixed schedule (one every
    `interval_ms` from the first), each at least one sliding second (the risk gate's window, by its ms clock) after
    the previous bar's orders were checked: bar closes that arrive 999 ms apart would have the gate refuse the
    bar's orders, which would measure the gate, not the order path.
    """
    session, pump = path.session, Pump(path.orders)
    decided: dict[str, int] = {}  # client id -> ns when its bar's on_bar was called
    by_number: dict[int, int] = {}
    start = time.time_ns()
    last_open = session.last_timestamp or 0
    last_end = start
    for k in range(bars):
        if keep_rate:
            due = max(start + k * interval_ms * 1_000_000, (last_end // 1_000_000 + 1_000) * 1_000_000 if k else 0)
        else:
            due = last_end + interval_ms * 1_000_000 if k else start
        while (delay := due - time.time_ns()) > 0:  # uvloop's timers may wake a fraction of a ms early
            await asyncio.sleep(delay / 1e9)
        now_ms = time.time_ns() // 1_000_000
        open_ms = max(last_open + 1, now_ms // BAR_MS * BAR_MS - BAR_MS)  # the 1s candle that just closed
        last_open = open_ms
        candles = {s: closed(s, open_ms) for s in SYMBOLS}
        t_bar = time.time_ns()
        session.on_bar(open_ms, candles)
        last_end = time.time_ns()
        intents, _ = session.take_outbox()
        for intent in intents:
            assert intent.order_id is not None
            by_number[intent.order_id] = t_bar
        pump.send(intents)
        if on_bar_done is not None:
            on_bar_done(t_bar, len(intents))
    await pump.settle()
    if pump.errors:
        raise pump.errors[0]
    for o in path.orders.ledger:
        seq = path.orders.sequence_of(o.client_order_id)
        if seq in by_number:
            decided[o.client_order_id] = by_number[seq]
    arrivals = await venue.ask("arrivals")
    return decided, {"arrivals": arrivals, "denials": len(session.denials)}


# ---------------------------------------------------------------- 1. latency


async def bench_latency(venue: Venue, backend: str, folder: Path, orders: int, interval_ms: int) -> dict[str, Any]:
    async with database(backend, folder) as db, live_path(venue, db, BuyEveryBar(), capital=1e9) as path:
        await bar_loop(path, venue, 5, interval_ms)  # warm: connections, the first statements, ccxt's caches
        path.stamps.written.clear()
        path.stamps.db.clear()
        gc.collect()
        decided, extra = await bar_loop(path, venue, orders, interval_ms)
        st, arrivals = path.stamps, extra["arrivals"]
        sent = [ms(st.written[c] - t) for c, t in decided.items() if c in st.written]
        arrived = [ms(arrivals[c] - t) for c, t in decided.items() if c in arrivals]
        decide = [ms(st.db[c][0] - t) for c, t in decided.items() if c in st.db]
        write = [ms(st.db[c][1] - st.db[c][0]) for c in decided if c in st.db]
        after = [ms(st.written[c] - st.db[c][1]) for c in decided if c in st.db and c in st.written]
        statuses = {str(s): n for s, n in _count(o.status for o in path.orders.ledger).items()}
        return {
            "backend": backend, "orders": len(decided), "sent": len(sent), "interval_ms": interval_ms,
            "statuses": statuses, "denials": extra["denials"],
            "to_written": spread(sent), "to_venue": spread(arrived), "decide": spread(decide),
            "pending_new_write": spread(write), "write_to_sent": spread(after),
        }  # fmt: skip


def _count(items: Any) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


# ---------------------------------------------------------------- 2. sustained rate


async def bench_sustained(venue: Venue, backend: str, folder: Path, seconds: int) -> dict[str, Any]:
    strategy = BuyEveryBar({"symbols_per_bar": len(SYMBOLS), "per_symbol": 2})
    async with database(backend, folder) as db, live_path(venue, db, strategy, capital=1e9) as path:
        bars: list[tuple[int, int]] = []  # (ns of the bar, orders decided in it)
        await bar_loop(path, venue, 2, BAR_MS, keep_rate=True)  # warm
        await asyncio.sleep(1.0)  # the warm bars' orders leave the gate's sliding second
        path.stamps.written.clear()
        first_order = path.orders.last_sequence + 1
        decided, extra = await bar_loop(
            path, venue, seconds, BAR_MS, on_bar_done=lambda t, n: bars.append((t, n)), keep_rate=True
        )
        written = path.stamps.written
        latencies = [ms(written[c] - t) for c, t in decided.items() if c in written]
        events = sorted([(t, 1) for t in decided.values()] + [(written[c], -1) for c in decided if c in written])
        queue = peak = 0
        for _, step in events:
            queue += step
            peak = max(peak, queue)
        # What was still unsent when each bar was called (its own orders not yet decided): the backlog carried over.
        carried = [sum(1 for c, t in decided.items() if t < bar_t and written.get(c, 1 << 62) >= bar_t)
                   for bar_t, _ in bars]  # fmt: skip
        late = sum(1 for c, t in decided.items() if written.get(c, 1 << 62) - t >= 1_000_000_000)
        span_s = (bars[-1][0] - bars[0][0]) / 1e9 + 1.0  # the bars' seconds: first bar to the end of the last
        statuses = {str(s): n for s, n in _count(
            o.status for o in path.orders.ledger if path.orders.sequence_of(o.client_order_id) >= first_order
        ).items()}  # fmt: skip
        return {
            "backend": backend, "seconds": seconds, "decided": len(decided), "sent": len(latencies),
            "rate": len(latencies) / span_s, "span_s": span_s, "peak_backlog": peak,
            "carried_backlog_max": max(carried), "late": late, "latency": spread(latencies),
            "denials": extra["denials"], "statuses": statuses,
        }  # fmt: skip


# ---------------------------------------------------------------- 3. reconciliation at start


async def bench_reconcile(venue: Venue, backend: str, folder: Path, n: int) -> dict[str, Any]:
    from cracktrader.runs.live import LivePlan, LiveRuntime

    async with database(backend, folder) as db:
        run_id = uuid.uuid4().hex
        async with live_path(venue, db, BuyEveryBar(), capital=1e9, run_id=run_id) as path:
            t0 = time.perf_counter()
            for k in range(n):
                symbol = SYMBOLS[k % len(SYMBOLS)]
                price = path.orders.last_prices[symbol] / 2  # far under the market: it rests
                order = await path.orders.place(OrderIntent(symbol, "buy", "limit", 2 * NOTIONAL / price, price))
                assert order.status is OrderStatus.OPEN, (order.status, order.reason)
            place_s = time.perf_counter() - t0
            token = path.token
        open_at_venue = await venue.ask("open_orders")
        # The restart: a new client (its throttle starts empty), the rows read back, a new LiveOrders.
        async with live_path(venue, db, BuyEveryBar(), capital=1e9) as fresh:
            store = LiveOrderStore(fresh.engine)
            session = fresh.session
            t1 = time.perf_counter()
            stored = await store.load(run_id)
            fills = await store.fills(run_id)
            orders = LiveOrders(run_id=run_id, token=lambda: token, exchange="binance", tag=session_tag(run_id),
                                calls=fresh.calls, store=store, clock=fresh.orders.clock, portfolio=session,
                                rules=fresh.orders.rules)  # fmt: skip
            orders.restore(
                [(s.order, OrderIntent(s.order.symbol, s.order.side, s.order.type, s.order.amount, s.order.price),
                  s.watch_until) for s in stored], fills,
            )  # fmt: skip
            session.orders = orders
            plan = LivePlan(session, None, [], None, "USDT", False)  # type: ignore[arg-type]
            runtime = LiveRuntime(plan, run_id=run_id, token=lambda: token, store=store, clock=orders.clock)
            runtime.client, runtime.calls, runtime.orders = fresh.client, fresh.calls, orders
            t2 = time.perf_counter()
            report = await runtime.reconcile(start=True)
            t3 = time.perf_counter()
            for o in list(orders.ledger.open_orders()):  # the next backend's session finds an empty account
                await orders.cancel(o.client_order_id)
        return {
            "backend": backend, "orders": n, "open_at_venue": open_at_venue, "place_s": place_s,
            "restore_s": t2 - t1, "reconcile_s": t3 - t2, "total_s": t3 - t1, "report": report.to_dict(),
        }  # fmt: skip


# ---------------------------------------------------------------- the tables


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def print_tables(out: dict[str, Any], method_note: str) -> None:
    print("\n== 1. closed candle -> new-order request out (pending_new write included) ==")
    print(_row(["backend", "stamp", "p50 ms", "p99 ms", "max ms", "orders", "target", "p99/target", "pass"]))
    print(_row(["---"] * 9))
    for r in out.get("latency", []):
        for label, key in (("written by aiohttp (in process)", "to_written"), ("arrived at venue process", "to_venue")):
            s = r[key]
            print(_row([r["backend"], label, f"{s['p50']:.2f}", f"{s['p99']:.2f}", f"{s['max']:.2f}", str(s["n"]),
                        "p99 < 5 ms", f"{s['p99'] / 5:.2f}", "PASS" if s["p99"] < 5 else "FAIL"]))  # fmt: skip
    for r in out.get("latency", []):
        parts = ", ".join(f"{k} p50 {r[k]['p50']:.2f} / p99 {r[k]['p99']:.2f}"
                          for k in ("decide", "pending_new_write", "write_to_sent"))  # fmt: skip
        print(f"  - {r['backend']}: {parts} ms; statuses {r['statuses']}; gate denials {r['denials']}")
    print(f"  - {method_note}")

    print("\n== 2. 10 orders/s sustained ==")
    print(_row(["backend", "achieved", "sent/decided", "peak backlog", "carried into next bar", "late (>= 1 s)",
                "latency p50/p99/max ms", "target", "rate/target", "pass"]))  # fmt: skip
    print(_row(["---"] * 10))
    for r in out.get("sustained", []):
        s = r["latency"]
        ok = r["rate"] >= 9.9 and r["late"] == 0 and r["carried_backlog_max"] == 0 and r["sent"] == r["decided"]
        print(_row([r["backend"], f"{r['rate']:.2f}/s over {r['span_s']:.1f} s", f"{r['sent']}/{r['decided']}",
                    str(r["peak_backlog"]), str(r["carried_backlog_max"]), str(r["late"]),
                    f"{s['p50']:.1f} / {s['p99']:.1f} / {s['max']:.1f}", "10/s, none late, no backlog",
                    f"{r['rate'] / 10:.2f}", "PASS" if ok else "FAIL"]))  # fmt: skip
    for r in out.get("sustained", []):
        print(f"  - {r['backend']}: statuses {r['statuses']}; gate denials {r['denials']}")

    print("\n== 3. reconciliation at start: 100 open orders on 5 symbols, ccxt throttle ON ==")
    print(_row(["backend", "restore + reconcile", "of which reconcile", "lookups", "updated", "target",
                "time/target", "pass"]))  # fmt: skip
    print(_row(["---"] * 8))
    for r in out.get("reconcile", []):
        rep = r["report"]
        print(_row([r["backend"], f"{r['total_s']:.2f} s", f"{r['reconcile_s']:.2f} s", str(rep["looked_up"]),
                    str(rep["updated"]), "< 15 s", f"{r['total_s'] / 15:.2f}",
                    "PASS" if r["total_s"] < 15 and rep["looked_up"] == r["orders"] else "FAIL"]))  # fmt: skip
    for r in out.get("reconcile", []):
        print(f"  - {r['backend']}: {r['open_at_venue']} open at the venue; placing them took {r['place_s']:.2f} s; "
              f"report {r['report']}")  # fmt: skip


async def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    venue = await Venue.start(0, BASES, "--trading", "--wall-clock")
    out: dict[str, Any] = {"machine": machine_info()}
    gc.freeze()
    try:
        for backend in args.backends:
            if "latency" in args.only:
                out.setdefault("latency", []).append(
                    await bench_latency(venue, backend, folder, args.orders, args.interval_ms)
                )
                print(f"  latency {backend}: done", file=sys.stderr, flush=True)
            if "sustained" in args.only:
                out.setdefault("sustained", []).append(await bench_sustained(venue, backend, folder, args.seconds))
                print(f"  sustained {backend}: done", file=sys.stderr, flush=True)
            if "reconcile" in args.only:
                out.setdefault("reconcile", []).append(await bench_reconcile(venue, backend, folder, 100))
                print(f"  reconcile {backend}: done", file=sys.stderr, flush=True)
    finally:
        await venue.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=1000, help="orders timed in benchmark 1, per backend")
    parser.add_argument("--interval-ms", type=int, default=120, help="between bars in benchmark 1 (gate: 10/s)")
    parser.add_argument("--seconds", type=int, default=60, help="length of benchmark 2")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--only", nargs="+", default=["latency", "sustained", "reconcile"],
                        choices=["latency", "sustained", "reconcile"])  # fmt: skip
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="the server runs on uvloop")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(f"machine: {machine_info()}; {args.loop} loop")
    with (
        tempfile.TemporaryDirectory(prefix="ct-bench-live-") as tmp,
        asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner,
    ):
        out = runner.run(run(args, Path(tmp)))
    out["loop"] = args.loop
    print_tables(
        out,
        "stamps: time.time_ns() before LiveSession.on_bar(...) with the closed candle; 'written' when aiohttp "
        "has written the request body to the socket (on_request_chunk_sent of the ccxt client's session); "
        "'arrived' when the venue process's server middleware first sees it (time.time_ns there)",
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
