"""Sweeps and walk-forwards through the run queue: serve's own executor on SQLite, and `cracktrader worker`
processes on PostgreSQL behind an API server that executes nothing, followed, cancelled and read through the API."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from websockets.asyncio.client import connect

from cracktrader.db.engine import make_engine
from cracktrader.db.models import RunRecord
from cracktrader.settings import Settings, get_settings
from queue_support import deployment, holder_of
from test_web_sweeps import SLOW_SWEEP
from test_web_walkforward import WALK
from web_support import SLOW_RUN, LiveServer

pytestmark = pytest.mark.anyio

# The walk-forward's grid as a sweep: 2 x 2 combinations, all valid.
SMA_SWEEP: dict[str, Any] = {k: v for k, v in WALK.items() if k not in ("train", "test", "purge")}
ENDED = ("completed", "failed", "cancelled")
PATIENCE_S = 120.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _post(c: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await c.post(f"/api/v1/{path}", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued"
    return dict(r.json())


async def _until(c: httpx.AsyncClient, path: str, wanted: tuple[str, ...]) -> dict[str, Any]:
    deadline = time.monotonic() + PATIENCE_S
    while True:
        doc: dict[str, Any] = (await c.get(f"/api/v1/{path}")).json()
        if doc["status"] in wanted:
            return doc
        assert time.monotonic() < deadline, doc
        await asyncio.sleep(0.05)


async def _queue_rows(settings: Settings, *ids: str) -> dict[str, Any]:
    engine = make_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            query = select(RunRecord.id, RunRecord.kind, RunRecord.queue_state, RunRecord.status, RunRecord.attempts)
            result = await conn.execute(query.where(RunRecord.id.in_(ids)))
            return {row.id: row for row in result.all()}
    finally:
        await engine.dispose()


def _rows_of(page: dict[str, Any]) -> list[tuple[Any, ...]]:
    return sorted((tuple(sorted(r["params"].items())), r["metrics"]["total_return"]) for r in page["items"])


async def test_a_queued_sweep_and_walkforward_run_on_serves_own_executor_as_without_the_queue() -> None:
    base = get_settings().model_copy(update={"max_concurrent_backtests": 2})
    found: dict[bool, tuple[list[tuple[Any, ...]], dict[str, Any]]] = {}
    for queued in (False, True):
        with LiveServer(base.model_copy(update={"run_queue": queued})) as srv:
            async with (
                httpx.AsyncClient(base_url=srv.base_url, timeout=30) as c,
                connect(f"{srv.ws_url}/api/v1/ws/status") as ws,
            ):
                assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "snapshot"
                sweep_id = (await _post(c, "sweeps", SMA_SWEEP))["sweep_id"]
                walk_id = (await _post(c, "walkforwards", WALK))["walkforward_id"]
                finals: list[str] = []
                while len(set(finals)) < 2:
                    message = json.loads(await asyncio.wait_for(ws.recv(), PATIENCE_S))
                    if message["type"].endswith("_progress") and message["payload"]["status"] in ENDED:
                        finals.append(message["type"])
                doc = await _until(c, f"sweeps/{sweep_id}", ENDED)
                walk = await _until(c, f"walkforwards/{walk_id}", ENDED)
                page = (await c.get(f"/api/v1/sweeps/{sweep_id}/results")).json()
                runs = (await c.get("/api/v1/runs")).json()
                missing = await c.get(f"/api/v1/runs/{sweep_id}")
        assert doc["status"] == "completed" and doc["rows"] == 4, doc
        assert walk["status"] == "completed" and walk["progress"]["done"] == walk["progress"]["total"] == 4, walk
        # The queue's place of a sweep is not a run: the run history does not list it.
        assert runs["total"] == 0 and missing.status_code == 404
        assert sorted(finals) == ["sweep_progress", "walkforward_progress"]  # each end once, not again from the log
        found[queued] = (_rows_of(page), walk["report"])
        if queued:
            rows = await _queue_rows(base, sweep_id, walk_id)
            assert {(r.kind, r.queue_state, r.status, r.attempts) for r in rows.values()} == {
                ("sweep", "done", "completed", 1),
                ("walkforward", "done", "completed", 1),
            }
    assert found[True] == found[False]  # the same rows and report, bit for bit


async def test_workers_run_sweeps_and_walkforwards_that_any_api_process_follows_and_reads(
    tmp_path: Path, pg: Settings
) -> None:
    with deployment(tmp_path, pg, workers=2) as (srv, procs, settings):
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as c:
            async with connect(f"{srv.ws_url}/api/v1/ws/status") as ws:
                assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "snapshot"
                sweep_id = (await _post(c, "sweeps", SLOW_SWEEP))["sweep_id"]
                walk_id = (await _post(c, "walkforwards", WALK))["walkforward_id"]
                progress: list[dict[str, Any]] = []
                running: dict[str, Any] | None = None
                while not (progress and progress[-1]["status"] in ENDED):
                    message = json.loads(await asyncio.wait_for(ws.recv(), PATIENCE_S))
                    if message["type"] == "sweep_progress":
                        progress.append(message["payload"])
                        if running is None and progress[-1]["status"] == "running" and progress[-1]["done"] > 0:
                            # It runs elsewhere: the API process reads its progress from the event log.
                            running = (await c.get(f"/api/v1/sweeps/{sweep_id}")).json()
                            listed = (await c.get("/api/v1/sweeps")).json()["items"]
            doc = await _until(c, f"sweeps/{sweep_id}", ENDED)
            walk = await _until(c, f"walkforwards/{walk_id}", ENDED)
            page = (await c.get(f"/api/v1/sweeps/{sweep_id}/results", params={"limit": 100})).json()
        stopped = [proc.stop() for proc in procs]
    assert doc["status"] == "completed" and doc["rows"] == 40, doc
    assert walk["status"] == "completed" and walk["report"] is not None, walk
    assert page["total"] == 40 and [r["rank"] for r in page["items"]] == list(range(1, 41))
    assert progress[0]["status"] == "queued" and progress[-1]["status"] == "completed"
    done = [p["done"] for p in progress]
    assert done == sorted(done) and done[-1] == 40 and all(p["sweep_id"] == sweep_id for p in progress)
    assert running is not None and running["status"] == "running", running
    assert 0 < running["progress"]["done"] < 40 and running["progress"]["total"] == 40
    assert running["progress"]["eta_seconds"] is not None and 0 < running["progress"]["fraction"] < 1
    (in_list,) = (item for item in listed if item["sweep_id"] == sweep_id)
    assert in_list["status"] == "running" and in_list["progress"]["done"] > 0
    rows = await _queue_rows(settings, sweep_id, walk_id)
    assert {(r.queue_state, r.attempts) for r in rows.values()} == {("done", 1)}  # each executed once
    assert stopped == [0, 0]
    logs = "".join(p.log.read_text() for p in procs)
    assert "Traceback" not in logs


async def test_a_cancel_through_the_api_reaches_the_worker_and_a_queued_sweep_is_cancelled_before_any_runs(
    tmp_path: Path, pg: Settings
) -> None:
    # One job at a time across the deployment: the second sweep waits in the queue.
    with deployment(tmp_path, pg, workers=1, CRACKTRADER_MAX_CONCURRENT_BACKTESTS="1") as (srv, _, settings):
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as c:
            running = (await _post(c, "sweeps", SLOW_SWEEP))["sweep_id"]
            waiting = (await _post(c, "sweeps", SLOW_SWEEP))["sweep_id"]
            deadline = time.monotonic() + PATIENCE_S
            while (await c.get(f"/api/v1/sweeps/{running}")).json()["progress"]["done"] == 0:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            queued = await c.delete(f"/api/v1/sweeps/{waiting}")
            asked = time.monotonic()
            cancelled = await c.delete(f"/api/v1/sweeps/{running}")
            took = time.monotonic() - asked
            doc = await _until(c, f"sweeps/{running}", ENDED)
            page = (await c.get(f"/api/v1/sweeps/{running}/results", params={"limit": 100})).json()
            again = await c.delete(f"/api/v1/sweeps/{waiting}")
    assert queued.status_code == 200 and queued.json()["status"] == "cancelled" and queued.json()["rows"] == 0
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.json()
    assert took < 5.0  # within the 2 s the worker gets, plus the command's round trip
    assert 0 < doc["evaluated"] < 40 and doc["rows"] == doc["evaluated"] == page["total"]
    rows = await _queue_rows(settings, running, waiting)
    assert (rows[waiting].queue_state, rows[waiting].status, rows[waiting].attempts) == ("done", "stopped", 0)
    assert (rows[running].queue_state, rows[running].status, rows[running].attempts) == ("done", "stopped", 1)


@pytest.mark.parametrize("policy", ["requeue", "fail"])
async def test_a_sigkilled_workers_sweep_is_run_again_or_failed_per_policy_and_a_new_server_leaves_it_alone(
    tmp_path: Path, pg: Settings, policy: str
) -> None:
    env: dict[str, Any] = {"CRACKTRADER_EXPIRED_BACKTEST_POLICY": policy, "CRACKTRADER_MAX_CONCURRENT_BACKTESTS": "1"}
    with deployment(tmp_path, pg, workers=2, **env) as (srv, procs, settings):
        async with (
            httpx.AsyncClient(base_url=srv.base_url, timeout=30) as c,
            connect(f"{srv.ws_url}/api/v1/ws/status") as ws,
        ):
            sweep_id = (await _post(c, "sweeps", SLOW_SWEEP))["sweep_id"]
            await _until(c, f"sweeps/{sweep_id}", ("running",))
            _, victim = await holder_of(settings, sweep_id, procs)
            victim.kill()
            # A second API server starting now fails what gone servers left unfinished: not a job in the queue.
            with LiveServer(settings, executor=False) as other:
                async with httpx.AsyncClient(base_url=other.base_url, timeout=30) as c2:
                    seen_there = (await c2.get(f"/api/v1/sweeps/{sweep_id}")).json()
            doc = await _until(c, f"sweeps/{sweep_id}", ENDED)
            # The stream hears the end too, even of a sweep whose end no executor announced (its lease lapsed).
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), PATIENCE_S))
                if message["type"] == "sweep_progress" and message["payload"]["status"] in ENDED:
                    break
    assert message["payload"]["status"] == doc["status"]
    assert seen_there["status"] in ("running", "queued"), seen_there
    rows = await _queue_rows(settings, sweep_id)
    if policy == "requeue":
        assert doc["status"] == "completed" and doc["rows"] == 40, doc
        assert (rows[sweep_id].queue_state, rows[sweep_id].attempts) == ("done", 2)
    else:  # nothing stays running: the sweep's document follows its place in the queue
        assert doc["status"] == "failed" and doc["error_code"] == "INTERRUPTED", doc
        assert "stopped renewing its lease" in doc["error"]
        assert (rows[sweep_id].queue_state, rows[sweep_id].status, rows[sweep_id].attempts) == ("done", "failed", 1)


async def test_a_user_over_the_queued_and_running_limit_gets_429_for_a_sweep_and_nothing_of_it_is_stored() -> None:
    from auth_support import auth_client, bearer

    settings = get_settings().model_copy(
        update={"run_queue": True, "max_runs_per_user": 2, "max_concurrent_backtests": 1}
    )
    async with auth_client(settings) as c:
        alice, bob = await bearer(c, "alice"), await bearer(c, "bob")
        first = await c.post("/api/v1/sweeps", json=SLOW_SWEEP, headers=alice)
        second = await c.post("/api/v1/walkforwards", json=WALK, headers=alice)
        over = await c.post("/api/v1/sweeps", json=SMA_SWEEP, headers=alice)
        others = await c.post("/api/v1/sweeps", json=SMA_SWEEP, headers=bob)
        peek = await c.get(f"/api/v1/sweeps/{first.json()['sweep_id']}", headers=bob)
        cancel_peek = await c.delete(f"/api/v1/sweeps/{first.json()['sweep_id']}", headers=bob)
        listed = (await c.get("/api/v1/sweeps", headers=alice)).json()
        for path in (f"sweeps/{first.json()['sweep_id']}", f"walkforwards/{second.json()['walkforward_id']}"):
            await c.delete(f"/api/v1/{path}", headers=alice)  # a running one stops after the chunk in hand
            deadline = time.monotonic() + PATIENCE_S
            while (await c.get(f"/api/v1/{path}", headers=alice)).json()["status"] not in ENDED:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
    assert first.status_code == second.status_code == others.status_code == 202, (first.text, second.text)
    assert over.status_code == 429 and over.json()["error"]["code"] == "TOO_MANY_RUNS", over.text
    assert over.json()["error"]["details"] == {"limit": 2, "active": 2}
    assert [s["sweep_id"] for s in listed["items"]] == [first.json()["sweep_id"]]  # the refused one is not stored
    assert peek.status_code == 404 and cancel_peek.status_code == 404  # another user's sweep is not found


async def test_a_queued_sweep_outlives_the_server_that_accepted_it_and_runs_when_a_worker_comes(
    tmp_path: Path, pg: Settings
) -> None:
    with deployment(tmp_path, pg, workers=0) as (srv, _, _):
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as c:
            sweep_id = (await _post(c, "sweeps", SMA_SWEEP))["sweep_id"]
    # The server that accepted it is gone; the next one fails what gone servers left, but not the queue's jobs.
    with deployment(tmp_path, pg, workers=1) as (srv, _, _):
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as c:
            doc = await _until(c, f"sweeps/{sweep_id}", ENDED)
    assert doc["status"] == "completed" and doc["rows"] == 4, doc


async def test_a_sigtermed_worker_hands_its_sweep_back_and_the_other_runs_it_to_the_end(
    tmp_path: Path, pg: Settings
) -> None:
    env: dict[str, Any] = {"CRACKTRADER_EXECUTOR_DRAIN_S": "0.5", "CRACKTRADER_MAX_CONCURRENT_BACKTESTS": "1"}
    with deployment(tmp_path, pg, workers=2, **env) as (srv, procs, settings):
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as c:
            sweep_id = (await _post(c, "sweeps", SLOW_SWEEP))["sweep_id"]
            await _until(c, f"sweeps/{sweep_id}", ("running",))
            _, drained = await holder_of(settings, sweep_id, procs)
            code = drained.stop()
            doc = await _until(c, f"sweeps/{sweep_id}", ENDED)
    assert code == 0
    assert doc["status"] == "completed" and doc["rows"] == 40 and doc["error"] is None, doc
    rows = await _queue_rows(settings, sweep_id)
    assert (rows[sweep_id].queue_state, rows[sweep_id].status, rows[sweep_id].attempts) == ("done", "completed", 2)
    assert "Traceback" not in drained.log.read_text()


async def test_four_executors_never_run_more_than_the_global_limit_sampled_every_50_ms(
    tmp_path: Path, pg: Settings
) -> None:
    week_run = {**SLOW_RUN, "end_date": "2024-01-08T00:00:00Z", "mode": "backtest"}
    with deployment(tmp_path, pg, workers=2, executors=2, CRACKTRADER_MAX_CONCURRENT_BACKTESTS="2") as (
        srv,
        _,
        settings,
    ):
        engine = make_engine(settings.database_url)
        counts: list[int] = []
        done = asyncio.Event()

        async def sample() -> None:
            claimed = select(func.count()).select_from(RunRecord).where(RunRecord.queue_state == "claimed")
            while not done.is_set():
                async with engine.connect() as conn:
                    counts.append(int((await conn.execute(claimed)).scalar_one()))
                await asyncio.sleep(0.05)

        async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as c:
            sampler = asyncio.create_task(sample())
            runs = [(await c.post("/api/v1/runs", json=week_run)).json()["run_id"] for _ in range(4)]
            sweeps = [(await _post(c, "sweeps", SMA_SWEEP))["sweep_id"] for _ in range(2)]
            finals = [(await _until(c, f"runs/{r}/status", ("completed", "failed", "stopped")))["status"] for r in runs]
            ends = [(await _until(c, f"sweeps/{s}", ENDED))["status"] for s in sweeps]
            done.set()
            await sampler
        await engine.dispose()
    assert finals == ["completed"] * 4 and ends == ["completed"] * 2
    assert max(counts) == 2, counts  # the limit was reached by backtests and sweeps together, never exceeded
    assert len(counts) > 20
