"""A paper session outlives its API server on a `cracktrader worker`: the server is SIGKILLed, the worker takes the
session over within the lease plus 5 s, and another API process reads and stops it there (real processes,
PostgreSQL)."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from cracktrader.db.engine import make_engine
from cracktrader.db.models import ServerRecord
from cracktrader.db.session_store import SessionStore
from cracktrader.settings import Settings
from queue_support import WorkerProcess
from test_session_restart import SESSION, _until
from web_support import TEST_STRATEGY_DIR, LiveServer, ServerProcess

pytestmark = pytest.mark.anyio

LEASE_S = 2.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_paper_session_of_a_killed_server_is_taken_over_by_a_worker_and_stopped_through_another_server(
    tmp_path: Path, pg: Settings
) -> None:
    env = {
        "DATABASE_URL": pg.database_url,
        "CRACKTRADER_STRATEGY_DIR": str(TEST_STRATEGY_DIR),
        "CRACKTRADER_SERVER_LEASE_TTL_S": str(LEASE_S),
        "CRACKTRADER_SERVER_HEARTBEAT_S": "0.25",
    }
    engine = make_engine(pg.database_url)
    rows = SessionStore(engine)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    first = await asyncio.to_thread(ServerProcess(env, tmp_path / "first.log").start)
    try:
        async with httpx.AsyncClient(base_url=first.base_url, timeout=30) as c:
            r = await c.post("/api/v1/runs", json=SESSION)
            assert r.status_code == 201, r.text
            run_id = r.json()["run_id"]

            async def bars_on_first() -> bool:
                status = (await c.get(f"/api/v1/runs/{run_id}/status")).json()
                return bool(status["status"] == "running" and status["bars_processed"] > 0)

            await _until("the session to trade on the first server", bars_on_first)
        first.kill()
        killed = time.monotonic()

        async def on_the_worker() -> bool:
            owner = await rows.owner(run_id)
            if owner is None or owner[1] < 2:
                return False
            async with engine.connect() as conn:
                pid = (await conn.execute(select(ServerRecord.pid).where(ServerRecord.id == owner[0]))).scalar()
            assert worker.proc is not None
            return pid == worker.proc.pid

        await _until("the worker to take the session over", on_the_worker)
        took = time.monotonic() - killed
        settings = pg.model_copy(update={"strategy_dir": TEST_STRATEGY_DIR})
        with LiveServer(settings) as other:
            async with httpx.AsyncClient(base_url=other.base_url, timeout=30) as c:
                status = (await c.get(f"/api/v1/runs/{run_id}/status")).json()

                async def stored_six() -> bool:  # bars the worker has stored since it took over
                    page = (await c.get(f"/api/v1/runs/{run_id}/recent-candles", params={"limit": 1})).json()
                    return bool(page["bars"] >= 6)

                await _until("six stored candles", stored_six)
                detailed = await c.get(f"/api/v1/runs/{run_id}/status/detailed")
                candles = await c.get(f"/api/v1/runs/{run_id}/recent-candles", params={"limit": 5})
                other_symbol = await c.get(f"/api/v1/runs/{run_id}/recent-candles", params={"symbol": "ETH/USDT"})
                stop = await c.post(f"/api/v1/runs/{run_id}/stop")
                after = (await c.get(f"/api/v1/runs/{run_id}/status")).json()
        stopped = await rows.load(run_id)
    finally:
        first.kill()
        code = worker.stop()
        await engine.dispose()
    assert took < LEASE_S + 5.0, took
    assert status["status"] == "running" and status["run_id"] == run_id, status
    # A session another process runs reads as it stored it: its activity, its latest candles.
    assert detailed.status_code == 200, detailed.text
    assert detailed.json()["run_id"] == run_id and detailed.json()["equity_curve"], detailed.json()
    assert candles.status_code == 200, candles.text
    body = candles.json()
    assert body["symbol"] == "BTC/USDT" and body["timeframe"] == "1s" and body["bars"] > 5 and body["truncated"]
    stamps = body["candles"]["timestamp"]
    assert len(stamps) == 5 and stamps == sorted(stamps) and all(b - a == 1000 for a, b in itertools.pairwise(stamps))
    assert other_symbol.status_code == 404 and other_symbol.json()["error"]["code"] == "SYMBOL_NOT_IN_RUN"
    assert stop.status_code == 200 and stop.json()["status"] == "stopped", stop.text
    assert after["status"] == "stopped"
    assert stopped is not None and stopped.fencing_token == 2  # taken over once, by the worker only
    assert code == 0 and "Traceback" not in worker.log.read_text()
