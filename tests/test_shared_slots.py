"""The runner slot (`/run/*`, `/status`, `/results`, the slot's stream) shared by two server processes on one
PostgreSQL database: one run per user across both, 409 on either when busy, and either may watch, stop and reset it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from cracktrader.settings import Settings
from db_support import app_database
from web_support import SLOW_RUN, TEST_STRATEGY_DIR, LiveServer, released_run

pytestmark = pytest.mark.anyio
PATIENCE_S = 60.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def pg(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    with app_database("postgresql", monkeypatch) as settings:
        yield settings.model_copy(update={"run_queue": True, "strategy_dir": TEST_STRATEGY_DIR})


async def _until(client: httpx.AsyncClient, check: Any, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + PATIENCE_S
    while True:
        status = (await client.get("/api/v1/status")).json()
        if check(status):
            return dict(status)
        assert time.monotonic() < deadline, f"{what}: {status}"
        await asyncio.sleep(0.02)


async def test_one_slot_across_two_processes_watched_stopped_and_reset_through_the_other(
    pg: Settings, tmp_path: Path
) -> None:
    held = released_run(SLOW_RUN, tmp_path / "release")
    with LiveServer(pg, executor=False) as a, LiveServer(pg, executor=False) as b:
        async with (
            httpx.AsyncClient(base_url=a.base_url, timeout=30) as ca,
            httpx.AsyncClient(base_url=b.base_url, timeout=30) as cb,
        ):
            started = await ca.post("/api/v1/run/backtest", json=held)
            assert started.status_code == 200, started.text
            run_id = started.json()["run_id"]
            busy = await cb.post("/api/v1/run/backtest", json=held)
            seen = await _until(cb, lambda s: s.get("run_id") == run_id and s["status"] == "running", "B sees it")
            async with connect(f"{b.ws_url}/api/v1/ws/status") as ws:
                snapshot = json.loads(await asyncio.wait_for(ws.recv(), 30))
                update = json.loads(await asyncio.wait_for(ws.recv(), 30))
                stopped = await cb.post("/api/v1/run/stop")
                while not (update["type"] == "status_update" and update["payload"]["status"] == "stopped"):
                    update = json.loads(await asyncio.wait_for(ws.recv(), 30))
            again = await ca.post("/api/v1/run/backtest", json=held)
            await _until(ca, lambda s: s["status"] == "stopped", "A sees it stopped")
            reset = await cb.delete("/api/v1/run/reset")
            idle_a = await _until(ca, lambda s: s["status"] == "idle", "A sees the reset")
            results_a = (await ca.get("/api/v1/results")).json()
            results_b = (await cb.get("/api/v1/results")).json()
            second = await cb.post("/api/v1/run/backtest", json=held)
            busy_a = await ca.post("/api/v1/run/backtest", json=held)
            (tmp_path / "release").touch()
            await _until(ca, lambda s: s.get("run_id") == second.json()["run_id"] and s["status"] == "completed", "end")
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "RUN_ALREADY_ACTIVE"
    assert busy.json()["error"]["details"]["run_id"] == run_id
    assert seen["mode"] == "backtest"
    assert snapshot["type"] == "snapshot" and snapshot["payload"]["run_id"] == run_id
    assert update["payload"]["run_id"] == run_id
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped", stopped.text
    assert again.status_code == 409 and "DELETE /api/v1/run/reset" in again.json()["error"]["message"]
    assert reset.status_code == 200 and reset.json()["run_id"] == run_id
    assert idle_a["status"] == "idle"
    assert results_a["run_id"] == results_b["run_id"] == run_id and results_a["status"] == "stopped"
    assert second.status_code == 200 and busy_a.status_code == 409


async def test_starts_racing_on_two_processes_fill_the_slot_once(pg: Settings, tmp_path: Path) -> None:
    held = released_run(SLOW_RUN, tmp_path / "release")
    outcomes = []
    with LiveServer(pg, executor=False) as a, LiveServer(pg, executor=False) as b:
        async with (
            httpx.AsyncClient(base_url=a.base_url, timeout=30) as ca,
            httpx.AsyncClient(base_url=b.base_url, timeout=30) as cb,
        ):
            for _ in range(5):
                ra, rb = await asyncio.gather(
                    ca.post("/api/v1/run/backtest", json=held), cb.post("/api/v1/run/backtest", json=held)
                )
                outcomes.append(sorted((ra.status_code, rb.status_code)))
                winner = ca if ra.status_code == 200 else cb
                assert (await winner.post("/api/v1/run/stop")).status_code == 200
                reset = await winner.delete("/api/v1/run/reset")
                assert reset.status_code == 200, reset.text
            runs = (await ca.get("/api/v1/runs", params={"mode": "backtest"})).json()
    assert outcomes == [[200, 409]] * 5
    assert runs["total"] == 5  # the losing start recorded nothing


async def test_serve_with_two_workers_answers_every_request_from_one_shared_slot(pg: Settings, tmp_path: Path) -> None:
    from sqlalchemy import func, select

    from cracktrader.db.engine import make_engine
    from cracktrader.db.models import ServerRecord
    from web_support import ServerProcess

    env = {"DATABASE_URL": pg.database_url, "CRACKTRADER_STRATEGY_DIR": str(TEST_STRATEGY_DIR)}
    server = ServerProcess(env, tmp_path / "serve.log", args=("--workers", "2"))
    held = released_run(SLOW_RUN, tmp_path / "release")
    try:
        server.start()
        engine = make_engine(pg.database_url)
        deadline = time.monotonic() + PATIENCE_S
        while True:  # both processes up: each holds a server lease
            async with engine.connect() as conn:
                servers = (await conn.execute(select(func.count()).select_from(ServerRecord))).scalar_one()
            if servers == 2:
                break
            assert time.monotonic() < deadline, f"{servers} server processes registered"
            await asyncio.sleep(0.1)
        await engine.dispose()
        # A fresh connection per request: the port's two processes share the requests between them.
        async with httpx.AsyncClient(
            base_url=server.base_url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
        ) as c:
            started = await c.post("/api/v1/run/backtest", json=held)
            run_id = started.json()["run_id"]
            await _until(c, lambda s: s.get("run_id") == run_id and s["status"] == "running", "the run is seen")
            await asyncio.sleep(0.5)  # every process has the slot's change by now (a notice takes milliseconds)
            statuses = [(await c.get("/api/v1/status")).json() for _ in range(30)]
            refusals = [(await c.post("/api/v1/run/backtest", json=held)).status_code for _ in range(10)]
            stopped = await c.post("/api/v1/run/stop")
            pids = set()
            for _ in range(40):
                scrape = (await c.get("/metrics")).text
                pids.update(
                    line.split('"')[1] for line in scrape.splitlines() if line.startswith("cracktrader_process{")
                )
    finally:
        server.stop()
    assert len(pids) == 2  # both processes answered
    assert started.status_code == 200, started.text
    assert {(s["run_id"], s["status"]) for s in statuses} == {(run_id, "running")}
    assert refusals == [409] * 10
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped", stopped.text
    assert server.proc is not None and server.proc.returncode == 0
    assert "Traceback" not in server.log.read_text()


LIVE_SESSION = {"strategy_name": "SmaCross", "symbols": ["BTC/USDT"], "timeframe": "1m", "exchange": "synthetic"}


async def test_a_sessions_controls_work_through_a_process_that_does_not_run_it(pg: Settings) -> None:
    with LiveServer(pg, executor=False) as a, LiveServer(pg, executor=False) as b:
        async with (
            httpx.AsyncClient(base_url=a.base_url, timeout=30) as ca,
            httpx.AsyncClient(base_url=b.base_url, timeout=30) as cb,
        ):
            started = await ca.post("/api/v1/runs", json={**LIVE_SESSION, "mode": "paper"})
            assert started.status_code == 201, started.text
            run_id = started.json()["run_id"]
            paused = await cb.post(f"/api/v1/runs/{run_id}/pause")
            resumed = await cb.post(f"/api/v1/runs/{run_id}/resume")
            no_order = await cb.post(f"/api/v1/runs/{run_id}/orders/999/cancel")
            keys = await cb.post(f"/api/v1/runs/{run_id}/resume", json={"apiKey": "k-123", "secret": "s-456"})
            unknown = await cb.post(f"/api/v1/runs/{'0' * 32}/pause")
            stopped = await cb.post(f"/api/v1/runs/{run_id}/stop")
            after = await cb.post(f"/api/v1/runs/{run_id}/pause")
    assert paused.status_code == 200 and paused.json()["message"] == "New entries paused", paused.text
    assert resumed.status_code == 200, resumed.text
    assert no_order.status_code == 404 and no_order.json()["error"]["code"] == "ORDER_NOT_FOUND"
    assert "open orders" in no_order.json()["error"]["message"]
    assert keys.status_code == 409 and keys.json()["error"]["code"] == "SESSION_ELSEWHERE"
    assert "k-123" not in keys.text and "s-456" not in keys.text
    assert unknown.status_code == 404
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped", stopped.text
    assert after.status_code == 404  # an ended session elsewhere: as an ended one no process holds
