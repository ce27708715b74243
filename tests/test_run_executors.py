"""Backtests through the run queue: serve's own executor on SQLite, and `cracktrader worker` processes on PostgreSQL
behind an API server that executes nothing (`--no-executor`), watched, stopped and read through the API."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from websockets.asyncio.client import connect

from cracktrader.db.engine import make_engine
from cracktrader.db.models import RunRecord
from cracktrader.settings import Settings, get_settings
from queue_support import LEASE_S, deployment, holder_of
from web_support import SLOW_RUN, LiveServer, released_run

pytestmark = pytest.mark.anyio

# 168 hourly bars at 5 ms or more each: a second or more of running.
WEEK_RUN = {**SLOW_RUN, "end_date": "2024-01-08T00:00:00Z", "mode": "backtest"}
TERMINAL = ("completed", "failed", "stopped")
PATIENCE_S = 90.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _post_run(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    r = await client.post("/api/v1/runs", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "starting"
    return str(r.json()["run_id"])


async def _status(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/runs/{run_id}/status")
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _until_status(client: httpx.AsyncClient, run_id: str, wanted: tuple[str, ...]) -> dict[str, Any]:
    deadline = time.monotonic() + PATIENCE_S
    while True:
        status = await _status(client, run_id)
        if status["status"] in wanted:
            return status
        assert time.monotonic() < deadline, f"{run_id} still {status['status']}, not {wanted}"
        await asyncio.sleep(0.05)


async def _rows(settings: Settings, *run_ids: str) -> dict[str, RunRecord]:
    engine = make_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                select(
                    RunRecord.id,
                    RunRecord.queue_state,
                    RunRecord.status,
                    RunRecord.attempts,
                    RunRecord.job_spec,
                    RunRecord.config,
                    RunRecord.executor_id,
                ).where(RunRecord.id.in_(run_ids))
            )
            return {row.id: row for row in result.all()}  # type: ignore[misc]
    finally:
        await engine.dispose()


async def test_a_queued_backtest_runs_on_serves_own_executor_and_reads_like_any_run(tmp_path: Path) -> None:
    settings = get_settings().model_copy(update={"run_queue": True})
    with LiveServer(settings) as srv:
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as c:
            run_id = await _post_run(c, WEEK_RUN)
            final = await _until_status(c, run_id, TERMINAL)
            assert final["status"] == "completed", final
            results = (await c.get("/api/v1/results", params={"run_id": run_id})).json()
            listed = (await c.get(f"/api/v1/runs/{run_id}")).json()
    assert results["run_id"] == run_id and results["status"] == "completed"
    assert results["performance_metrics"]["total_trades"] > 0
    assert listed["status"] == "completed" and listed["symbols"] == ["BTC/USDT"]
    row = (await _rows(settings, run_id))[run_id]
    assert (row.queue_state, row.status, row.attempts, row.job_spec) == ("done", "completed", 1, None)


async def test_a_sealed_request_does_not_open_with_another_key_and_the_run_fails_saying_so(tmp_path: Path) -> None:
    from cracktrader.db.run_queue import JobSpecUnreadableError, RunQueue
    from cracktrader.db.secret_box import SecretBox

    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        from cracktrader.db.migrate import upgrade

        await asyncio.to_thread(upgrade, settings.database_url)
        ours = RunQueue(engine, settings, SecretBox(b"k" * 40))
        theirs = RunQueue(engine, settings, SecretBox(b"x" * 40))
        from datetime import UTC, datetime

        await ours.enqueue(
            user_id=None, kind="backtest", strategy_name="s", config={}, spec={"a": 1}, now=datetime.now(UTC)
        )
        with pytest.raises(JobSpecUnreadableError, match="same CRACKTRADER_SECRET_KEY"):
            await theirs.claim("e", ("backtest",), datetime.now(UTC))
    finally:
        await engine.dispose()


async def test_workers_run_every_queued_backtest_once_and_any_api_process_streams_and_reads_it(
    tmp_path: Path, pg: Settings
) -> None:
    with deployment(tmp_path, pg, workers=2) as (srv, procs, settings):
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as c:
            run_ids = [await _post_run(c, WEEK_RUN) for _ in range(4)]
            async with connect(f"{srv.ws_url}/api/v1/ws/status?run_id={run_ids[0]}") as ws:
                snapshot = json.loads(await asyncio.wait_for(ws.recv(), 30))
                assert snapshot["type"] == "snapshot"
                seen: list[dict[str, Any]] = []
                while not (seen and seen[-1]["type"] == "status_update" and seen[-1]["payload"]["status"] in TERMINAL):
                    message = json.loads(await asyncio.wait_for(ws.recv(), PATIENCE_S))
                    if message["type"] != "heartbeat":
                        seen.append(message)
            finals = [await _until_status(c, run_id, TERMINAL) for run_id in run_ids]
            results = [(await c.get("/api/v1/results", params={"run_id": r})).json() for r in run_ids]
        stopped = [proc.stop() for proc in procs]
    assert [f["status"] for f in finals] == ["completed"] * 4
    numbers = [snapshot["seq"], *(m["seq"] for m in seen)]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # every event, in order, no gap
    assert {m["type"] for m in seen} >= {"status_update", "trade_execution"}
    assert all(r["performance_metrics"]["total_trades"] > 0 for r in results)
    rows = await _rows(settings, *run_ids)
    assert {(rows[r].queue_state, rows[r].attempts) for r in run_ids} == {("done", 1)}  # each executed once
    assert stopped == [0, 0]  # SIGTERM drained both cleanly
    assert "Traceback" not in "".join(p.log.read_text() for p in procs)


async def test_a_stop_through_the_api_reaches_the_worker_and_a_queued_run_stops_before_it_is_claimed(
    tmp_path: Path, pg: Settings
) -> None:
    release = tmp_path / "release"
    held = {**released_run(SLOW_RUN, release), "mode": "backtest"}
    # One backtest at a time across the deployment: the second waits in the queue.
    with deployment(tmp_path, pg, workers=1, CRACKTRADER_MAX_CONCURRENT_BACKTESTS="1") as (srv, _, settings):
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as c:
            running = await _post_run(c, held)
            await _until_status(c, running, ("running",))
            waiting = await _post_run(c, held)
            assert (await _status(c, waiting))["status"] == "starting"
            queued = (await _rows(settings, waiting))[waiting]
            # The whole request is sealed (it may hold secrets); readers get the redacted copy in `config`.
            assert queued.job_spec is not None and b"SlowStrategy" not in queued.job_spec
            assert b"release" not in queued.job_spec and queued.config["strategy_name"] == "SlowStrategy"
            r = await c.post(f"/api/v1/runs/{waiting}/stop")
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "stopped" and "before an executor took it" in r.json()["message"]
            r = await c.post(f"/api/v1/runs/{running}/stop")
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "stopped", r.json()
            again = await c.post(f"/api/v1/runs/{running}/stop")
            final = await _until_status(c, running, TERMINAL)
    assert again.status_code == 409 and again.json()["error"]["code"] == "NO_ACTIVE_RUN"
    assert final["status"] == "stopped"
    rows = await _rows(settings, running, waiting)
    assert (rows[waiting].queue_state, rows[waiting].status, rows[waiting].attempts) == ("done", "stopped", 0)
    assert (rows[running].queue_state, rows[running].status) == ("done", "stopped")


async def test_a_sigkilled_workers_backtest_is_rerun_by_another_within_lease_plus_5s(
    tmp_path: Path, pg: Settings
) -> None:
    release = tmp_path / "release"
    held = {**released_run(SLOW_RUN, release), "mode": "backtest"}
    env: dict[str, Any] = {
        "CRACKTRADER_EXPIRED_BACKTEST_POLICY": "requeue",
        "CRACKTRADER_MAX_CONCURRENT_BACKTESTS": "1",
    }
    with deployment(tmp_path, pg, workers=2, **env) as (srv, procs, settings):
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as c:
            run_id = await _post_run(c, held)
            await _until_status(c, run_id, ("running",))
            holder, doomed = await holder_of(settings, run_id, procs)
            doomed.kill()
            killed = time.monotonic()
            while (row := (await _rows(settings, run_id))[run_id]).attempts < 2:
                assert time.monotonic() < killed + PATIENCE_S, "nobody took the run over"
                await asyncio.sleep(0.05)
            taken_over = time.monotonic() - killed
            release.touch()
            final = await _until_status(c, run_id, TERMINAL)
    assert row.executor_id is not None and row.executor_id != holder
    assert taken_over < LEASE_S + 5, taken_over
    assert final["status"] == "completed", final
    done = (await _rows(settings, run_id))[run_id]
    assert (done.queue_state, done.attempts) == ("done", 2)


def test_worker_refuses_sqlite_and_says_what_to_configure(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    env.pop("CRACKTRADER_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "cracktrader", "worker"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "needs the database every server shares" in done.stderr and "PostgreSQL" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_sigtermed_worker_hands_an_unfinished_backtest_back_and_another_runs_it_to_the_end(
    tmp_path: Path, pg: Settings
) -> None:
    release = tmp_path / "release"
    held = {**released_run(SLOW_RUN, release), "mode": "backtest"}
    env: dict[str, Any] = {"CRACKTRADER_EXECUTOR_DRAIN_S": "0.5", "CRACKTRADER_MAX_CONCURRENT_BACKTESTS": "1"}
    with deployment(tmp_path, pg, workers=2, **env) as (srv, procs, settings):
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as c:
            run_id = await _post_run(c, held)
            await _until_status(c, run_id, ("running",))
            holder, draining = await holder_of(settings, run_id, procs)
            assert draining.stop() == 0  # SIGTERM: past the drain timeout the run goes back to the queue
            while (row := (await _rows(settings, run_id))[run_id]).attempts < 2:
                assert row.status != "stopped", "the drained attempt recorded its run as stopped"
                await asyncio.sleep(0.05)
            taken_by = row.executor_id
            release.touch()
            final = await _until_status(c, run_id, TERMINAL)
    assert final["status"] == "completed", final
    done = (await _rows(settings, run_id))[run_id]
    assert (done.queue_state, done.status, done.attempts) == ("done", "completed", 2)
    assert taken_by is not None and taken_by != holder  # the other worker ran it


def test_serve_no_executor_on_sqlite_is_refused_saying_what_to_configure() -> None:
    from cracktrader.web.server.main import ServerConfigError, check_server_config

    with pytest.raises(ServerConfigError, match="set DATABASE_URL to PostgreSQL"):
        check_server_config(host="127.0.0.1", workers=1, insecure=False, database_url="sqlite:///x.db", executor=False)
    postgres = "postgresql+asyncpg://u@127.0.0.1/db"
    assert check_server_config(host="127.0.0.1", workers=1, insecure=False, database_url=postgres, executor=False) == []


async def test_a_user_over_the_queued_and_running_limit_gets_429_and_an_idempotent_retry_gets_the_same_run(
    tmp_path: Path,
) -> None:
    from auth_support import auth_client, bearer

    release = tmp_path / "release"
    held = {**released_run(SLOW_RUN, release), "mode": "backtest"}
    settings = get_settings().model_copy(
        update={"run_queue": True, "max_runs_per_user": 2, "max_concurrent_backtests": 1}
    )
    async with auth_client(settings) as c:
        alice, bob = await bearer(c, "alice"), await bearer(c, "bob")
        key = {**alice, "Idempotency-Key": "start-1"}
        first = await c.post("/api/v1/runs", json=held, headers=key)
        replay = await c.post("/api/v1/runs", json=held, headers=key)
        second = await c.post("/api/v1/runs", json=held, headers=alice)
        third = await c.post("/api/v1/runs", json=held, headers=alice)
        others = await c.post("/api/v1/runs", json=held, headers=bob)
        peek = await c.get(f"/api/v1/runs/{first.json()['run_id']}/status", headers=bob)
        release.touch()
        for r in (first, second, others):
            await _until_status_as(c, r.json()["run_id"], alice if r is not others else bob)
    assert first.status_code == 201 and replay.status_code == 201, (first.text, replay.text)
    assert replay.json()["run_id"] == first.json()["run_id"] and replay.headers["Idempotent-Replayed"] == "true"
    assert second.status_code == 201
    assert third.status_code == 429, third.text
    error = third.json()["error"]
    assert error["code"] == "TOO_MANY_RUNS" and error["details"] == {"limit": 2, "active": 2}
    assert "limit 2" in error["message"]
    assert others.status_code == 201  # the limit is per user
    assert peek.status_code == 404  # another user's queued run is not found


async def _until_status_as(client: httpx.AsyncClient, run_id: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while (await client.get(f"/api/v1/runs/{run_id}/status", headers=headers)).json()["status"] not in TERMINAL:
        assert time.monotonic() < deadline, run_id
        await asyncio.sleep(0.05)
