"""Run events through two real server processes to 50 WebSocket clients: the issue-15 fan-out, end to end.

.venv/bin/python benchmarks/bench_ws_fanout.py                      # Redis and PostgreSQL NOTIFY, ~1 minute
.venv/bin/python benchmarks/bench_ws_fanout.py --backend redis --events 20000 --rate 2000

Two `cracktrader serve` processes (python -m cracktrader.web.server.main) share a fresh PostgreSQL database and
the notices (Redis pub/sub, or NOTIFY without Redis). A publisher process plays the executor of one run: it appends
the run's events to the event log at `--rate` events a second on a fixed schedule, `--batch` per append (what the
server's own writer does with what a run emits within a few ms). Two client processes hold 25 WebSocket clients
each, one process per server, all following `/api/v1/ws/status?run_id=ID&since=0`; each checks that it gets every
event once, in order, numbered with no gap. Figures: events a second delivered to all 50 clients (first scheduled
publish to the last delivery), and publish-to-receive latency over every (event, client) pair from the event's
scheduled publish time (open loop: a stall counts in full).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_event_fanout import POSTGRES_URL, REDIS_URL, _admin, arguments, publish_on_schedule, report, summarize

CLIENTS_PER_SERVER = 25


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    import httpx

    port = _free_port()
    command = [sys.executable, "-m", "cracktrader.web.server.main", "--port", str(port), "--log-level", "warning"]
    with log.open("ab") as err:
        proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"a server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"a server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)


async def _clients(port: int, run_id: str, total: int, ready: Any, out: Any) -> None:
    from websockets.asyncio.client import connect

    latencies: list[float] = []
    last = 0.0
    url = f"ws://127.0.0.1:{port}/api/v1/ws/status?run_id={run_id}&since=0"
    sockets = [await connect(url, max_size=None) for _ in range(CLIENTS_PER_SERVER)]
    for ws in sockets:
        assert json.loads(await ws.recv())["type"] == "snapshot"
    ready.set()

    async def read(ws: Any) -> None:
        nonlocal last
        expected = 1
        while expected <= total:
            message = json.loads(await ws.recv())
            if message["type"] == "heartbeat":
                continue
            assert message["seq"] == expected, (message["seq"], expected)
            expected += 1
            now = time.time()
            latencies.append(now - message["payload"]["t"])
            last = max(last, now)

    await asyncio.gather(*(read(ws) for ws in sockets))
    for ws in sockets:
        await ws.close()
    out.put({"latencies": latencies, "last": last})


def _client_process(port: int, run_id: str, total: int, ready: Any, out: Any) -> None:
    asyncio.run(_clients(port, run_id, total, ready, out))


async def _publish(url: str, backend: str, prefix: str, run_id: str, total: int, rate: float, batch: int) -> float:
    from cracktrader.db.engine import make_engine
    from cracktrader.db.event_store import EventStore
    from cracktrader.notify import open_notices
    from cracktrader.runs.event_relay import EventRelay

    engine = make_engine(url)
    notices, close_client = await open_notices(
        redis_url=REDIS_URL if backend == "redis" else None, redis_prefix=prefix, engine=engine, name="run-events"
    )
    relay = EventRelay(EventStore(engine), notices)
    start = await publish_on_schedule(relay, run_id, "trade_execution", total, rate, batch)
    if close_client is not None:
        await close_client()
    await engine.dispose()
    return start


async def _create_run(url: str, run_id: str) -> None:
    from cracktrader.db.engine import make_engine
    from cracktrader.db.run_store import RunStore

    engine = make_engine(url)
    try:
        await RunStore(engine).create(
            run_id=run_id,
            mode="paper",
            status="running",
            config={},
            strategy_name="Bench",
            symbols=["BTC/USDT"],
            timeframe="1m",
            exchange="synthetic",
        )
    finally:
        await engine.dispose()


def measure(backend: str, total: int, rate: float, batch: int) -> dict[str, Any]:
    from cracktrader.db import migrate

    name = f"ct_bench_{uuid.uuid4().hex[:10]}"
    prefix = f"ct-bench-{uuid.uuid4().hex[:8]}:"
    run_id = uuid.uuid4().hex
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = f"{POSTGRES_URL}/{name}"
    servers: list[subprocess.Popen[bytes]] = []
    try:
        migrate.upgrade(url)
        asyncio.run(_create_run(url, run_id))
        with tempfile.TemporaryDirectory() as data:
            env = {"DATABASE_URL": url, "CRACKTRADER_DATA_DIR": data, "CRACKTRADER_REDIS_PREFIX": prefix}
            if backend == "redis":
                env["CRACKTRADER_REDIS_URL"] = REDIS_URL
            ports = []
            for i in range(2):
                proc, port = _start_server(env, Path(data) / f"server{i}.log")
                servers.append(proc)
                ports.append(port)
            ctx = mp.get_context("spawn")
            out = ctx.Queue()
            readies = [ctx.Event() for _ in ports]
            clients = [
                ctx.Process(target=_client_process, args=(p, run_id, total, r, out))
                for p, r in zip(ports, readies, strict=True)
            ]
            for c in clients:
                c.start()
            for r in readies:
                if not r.wait(120):
                    raise TimeoutError("the clients did not connect")
            start = asyncio.run(_publish(url, backend, prefix, run_id, total, rate, batch))
            results = [out.get(timeout=600) for _ in clients]
            for c in clients:
                c.join(30)
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(30)
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return summarize(backend, total, start, results)


def main() -> int:
    args = arguments(__doc__ or "", batch=20)
    rows = [measure(b, args.events, args.rate, args.batch) for b in args.backend or ["redis", "postgresql"]]
    report(rows, args, f"to 2 servers x {CLIENTS_PER_SERVER} WebSocket clients", "WebSocket client")
    return 0


if __name__ == "__main__":
    sys.exit(main())
