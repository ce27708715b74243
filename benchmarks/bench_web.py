"""Web API benchmarks: /status throughput and latency, WebSocket fan-out, and a backtest over HTTP.

Peers, measured in the same run with the same load generator: a raw ASGI app (uvicorn's ceiling) and plain
FastAPI with a response model and no middleware. Cracktrader runs with every middleware it uses.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import websockets

ROOT = Path(__file__).resolve().parent.parent
YEAR_1H = {
    "strategy_name": "SmaCross",
    "symbols": ["BTC/USDT"],
    "timeframe": "1h",
    "exchange": "synthetic",
    "start_date": "2023-01-01T00:00:00Z",
    "end_date": "2024-01-01T00:00:00Z",
    "initial_cash": 10000.0,
}
SLOW_RUN = {
    **YEAR_1H,
    "strategy_name": "SmaCrossEvents",
    "timeframe": "1m",
    "start_date": "2021-01-01T00:00:00Z",
    "end_date": "2023-01-01T00:00:00Z",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(target: str, *, factory: bool = False, env: dict[str, str] | None = None, cli: bool = False) -> Iterator[str]:
    """Run uvicorn (one worker) on a free loopback port in a subprocess; yields the base URL.

    `cli`: start the app as a user does, `cracktrader serve` (its uvicorn settings; `target` is ignored).
    """
    port = free_port()
    if cli:
        cmd = [sys.executable, "-m", "cracktrader", "serve", "--port", str(port), "--log-level", "warning"]
    else:
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            target,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ] + (["--factory"] if factory else [])
    proc = subprocess.Popen(cmd, cwd=ROOT / "benchmarks", env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(base + "/api/v1/status", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        time.sleep(1.0)  # let the app finish warming its kernels
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def wrk(url: str, seconds: int = 8, connections: int = 32) -> dict[str, float]:
    """Requests/s and latency percentiles from wrk (one thread: the server gets the other core)."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        value, unit = float(m.group(1)), m.group(2)  # type: ignore[union-attr]
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return {"rps": rps, "p50_ms": pct("50"), "p99_ms": pct("99")}


async def fixed_rate(url: str, rate: int = 1000, seconds: float = 8.0, connections: int = 16) -> list[float]:
    """Latencies (ms) of GETs sent on a fixed schedule over keep-alive connections (an open-loop load)."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    path = "/" + url.split("//")[1].split("/", 1)[1]
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    latencies: list[float] = []
    queue: asyncio.Queue[float] = asyncio.Queue()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        while True:
            scheduled = await queue.get()
            if scheduled < 0:
                break
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            latencies.append((time.perf_counter() - scheduled) * 1000)
        writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    start = time.perf_counter()
    total = int(rate * seconds)
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(due)  # latency counts from the scheduled time, so queueing delay is included
    for _ in workers:
        queue.put_nowait(-1.0)
    await asyncio.gather(*workers)
    return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def _fanout_clients(ws_url: str, n: int, out: Any, ready: Any) -> None:
    """One client process: `n` connections to /ws/status; reports status_update delivery latencies (ms)."""

    async def main() -> None:
        conns = [await websockets.connect(ws_url, max_queue=None) for _ in range(n)]
        for c in conns:
            await c.recv()  # snapshot
        ready.set()
        latencies: list[float] = []
        counts: list[int] = []

        async def listen(c: Any) -> None:
            seen = 0
            while True:
                msg = json.loads(await c.recv())
                arrived = time.time()
                if msg["type"] != "status_update":
                    continue
                seen += 1
                sent = datetime.fromisoformat(msg["timestamp"].replace("Z", "+00:00")).timestamp()
                latencies.append((arrived - sent) * 1000)
                if msg["payload"]["status"] in ("completed", "failed", "stopped"):
                    counts.append(seen)
                    return

        await asyncio.gather(*(listen(c) for c in conns))
        out.put((latencies, counts))

    asyncio.run(main())


def websocket_fanout(base: str, clients: int = 200, processes: int = 4) -> dict[str, float]:
    """`clients` on /ws/status (spread over client processes so the load generator is not the bottleneck)
    receive every status_update of a run; returns delivery latency percentiles."""
    ws_url = base.replace("http", "ws") + "/api/v1/ws/status"
    out: Any = mp.Queue()
    readies = [mp.Event() for _ in range(processes)]
    procs = [mp.Process(target=_fanout_clients, args=(ws_url, clients // processes, out, r)) for r in readies]
    for proc in procs:
        proc.start()
    for r in readies:
        r.wait(60)
    with httpx.Client(base_url=base) as http:
        http.delete("/api/v1/run/reset")
        http.post("/api/v1/run/backtest", json=SLOW_RUN)
        time.sleep(3)
        http.post("/api/v1/run/stop")
    latencies: list[float] = []
    counts: list[int] = []
    for _ in procs:
        lat, cnt = out.get(timeout=60)
        latencies += lat
        counts += cnt
    for proc in procs:
        proc.join()
    return {
        "clients": len(counts),
        "updates_per_client": statistics.median(counts),
        "all_received": float(len(set(counts)) == 1),
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
    }


def http_backtest(base: str, repeats: int = 7) -> list[float]:
    """Seconds for POST /run/backtest, polling /status to completed, and GET /results (one year of 1h)."""
    times = []
    with httpx.Client(base_url=base) as http:
        for _ in range(repeats):
            http.delete("/api/v1/run/reset")
            t0 = time.perf_counter()
            http.post("/api/v1/run/backtest", json=YEAR_1H).raise_for_status()
            while http.get("/api/v1/status").json()["status"] not in ("completed", "failed"):
                time.sleep(0.002)
            results = http.get("/api/v1/results")
            times.append(time.perf_counter() - t0)
            assert results.json()["status"] == "completed"
    return times


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is required: apt-get install wrk")
    data_dir = tempfile.mkdtemp(prefix="ct-bench-")
    env = {"CRACKTRADER_DATA_DIR": data_dir}
    rows: list[tuple[str, str, str, str, str]] = []
    with serve("web_peers.raw_asgi:app") as base:
        raw = wrk(base + "/api/v1/status")
    with serve("web_peers.plain_fastapi:app") as base:
        plain = wrk(base + "/api/v1/status")
    with serve("cracktrader.web.app:create_app", factory=True, env=env) as base:
        ours = wrk(base + "/api/v1/status")
        lat = asyncio.run(fixed_rate(base + "/api/v1/status"))
        fan = websocket_fanout(base)
        http_times = http_backtest(base)
    shutil.rmtree(data_dir, ignore_errors=True)
    rows.append(
        (
            "GET /api/v1/status throughput (wrk, 1 worker)",
            f"{ours['rps']:,.0f} req/s",
            f"raw ASGI {raw['rps']:,.0f}; plain FastAPI {plain['rps']:,.0f}",
            f"{ours['rps'] / plain['rps']:.2f}x FastAPI, {ours['rps'] / raw['rps']:.2f}x raw",
            ">= 8,000 req/s",
        )
    )
    rows.append(
        (
            "GET /api/v1/status p99 at 1,000 req/s (open loop)",
            f"{percentile(lat, 0.99):.2f} ms",
            f"p50 {percentile(lat, 0.5):.2f} ms, {len(lat)} requests",
            "-",
            "< 10 ms",
        )
    )
    rows.append(
        (
            "200 WebSocket clients, status_update delivery p99",
            f"{fan['p99_ms']:.1f} ms",
            f"{fan['clients']:.0f} clients, p50 {fan['p50_ms']:.1f} ms; {fan['updates_per_client']:.0f} updates each; "
            f"all same: "
            f"{bool(fan['all_received'])}",
            "-",
            "< 100 ms",
        )
    )
    rows.append(
        (
            "1 year of 1h over HTTP (POST, poll, GET results)",
            f"{min(http_times) * 1000:.0f} ms",
            f"median {statistics.median(http_times) * 1000:.0f} ms of {len(http_times)}",
            "-",
            "< 300 ms",
        )
    )
    widths = [
        max(len(r[i]) for r in [*rows, ("benchmark", "cracktrader", "peers / detail", "ratio", "target")])
        for i in range(5)
    ]
    header = ("benchmark", "cracktrader", "peers / detail", "ratio", "target")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    import bench_auth  # here, not at the top: bench_auth imports this module
    from benchlib import print_section

    print_section("auth (bench_auth.py)", bench_auth.run())
    import bench_results_io  # also imports this module

    print("\n== results I/O (bench_results_io.py) ==")
    bench_results_io.report()


if __name__ == "__main__":
    main()
