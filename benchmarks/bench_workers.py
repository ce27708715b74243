"""`GET /api/v1/status` on `cracktrader serve --workers 2` against one process, on the same PostgreSQL database.

Both run as a user starts them (`cracktrader serve`, fresh database each), with the runner slots shared through
PostgreSQL in both (the one-process server gets CRACKTRADER_RUN_QUEUE=true, which `--workers 2` implies), so the
ratio is what a second process adds. Also the laptop default (one process, SQLite) for reference. wrk (one thread)
measures throughput; an open-loop client at 1,000 req/s the latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from bench_web import fixed_rate, free_port, percentile, wrk
from benchlib import machine_info

ADMIN_URL = "postgresql://root@127.0.0.1:5432/test"


async def _admin(sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def database(backend: str, folder: Path) -> Iterator[str]:
    """A fresh database's URL: a PostgreSQL database of its own, or an SQLite file."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / f'{uuid.uuid4().hex}.db'}"
        return
    name = f"ct_bench_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def serve(url: str, folder: Path, workers: int, shared: bool) -> Iterator[str]:
    """`cracktrader serve` on a free port; yields its base URL once it answers."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "CRACKTRADER_DATA_DIR": str(folder / uuid.uuid4().hex)}
    env.pop("CRACKTRADER_DATABASE_URL", None)
    if shared:
        env["CRACKTRADER_RUN_QUEUE"] = "true"
    cmd = [sys.executable, "-m", "cracktrader", "serve", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen([*cmd, "--workers", str(workers)], env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(base + "/api/v1/status", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the server did not start")
            time.sleep(0.1)
        time.sleep(3.0 * workers)  # every process started and warmed its backtest pool
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def measure(base: str, seconds: int) -> dict[str, float]:
    """Throughput (wrk) and open-loop latency of `/status`."""
    url = base + "/api/v1/status"
    wrk(url, seconds=2)  # warm-up
    result = wrk(url, seconds=seconds)
    latencies = asyncio.run(fixed_rate(url, rate=1000, seconds=seconds))
    result.update(open_p50=percentile(latencies, 0.5), open_p99=percentile(latencies, 0.99))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"ct-bench-workers-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    cases = [("1 process, SQLite (laptop default)", "sqlite", 1, False)]
    cases += [("1 process, PostgreSQL, shared slots", "postgresql", 1, True)]
    cases += [("--workers 2, PostgreSQL", "postgresql", 2, True)]
    rows = []
    for label, backend, workers, shared in cases:
        with database(backend, folder) as url, serve(url, folder, workers, shared) as base:
            rows.append((label, measure(base, args.seconds)))
    print(machine_info())
    print("| server | `/status` req/s (wrk, 32 connections) | vs 1 process on PostgreSQL | p50 / p99 at 1,000 req/s |")
    print("|---|---|---|---|")
    one = rows[1][1]["rps"]
    for label, r in rows:
        ratio = r["rps"] / one
        print(f"| {label} | {r['rps']:,.0f} | {ratio:.2f}x | {r['open_p50']:.2f} / {r['open_p99']:.2f} ms |")


if __name__ == "__main__":
    main()
