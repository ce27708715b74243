"""`/ws/status?run_id=` from the event log: numbered events, a resume with `since` that gets exactly what was missed,
and a run executed behind one server followed in full through another (Redis and PostgreSQL NOTIFY, real ones)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import text
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from auth_support import PASSWORD, SECRET, login
from cracktrader.auth import service
from cracktrader.auth.store import AuthStore
from cracktrader.db.engine import make_engine
from cracktrader.notify import redis_client_name
from cracktrader.settings import Settings
from db_support import app_database
from test_shared_auth import REDIS_URL, shared
from web_support import SLOW_RUN, LiveServer, live_server

pytestmark = pytest.mark.anyio

# 168 hourly bars at 5 ms or more each: a second or more of running, with a trade every 10 bars.
WEEK_RUN = {**SLOW_RUN, "end_date": "2024-01-08T00:00:00Z"}
TERMINAL = ("completed", "failed", "stopped")
HEARTBEAT_S = 0.3
Backend = tuple[Settings, dict[str, Any]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _start(base_url: str) -> str:
    async with httpx.AsyncClient(base_url=base_url) as c:
        r = await c.post("/api/v1/run/backtest", json=WEEK_RUN)
        assert r.status_code == 200, r.text
        return str(r.json()["run_id"])


async def _read_to_end(ws: Any, timeout: float = 60.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The snapshot and every numbered event up to the run's final status (heartbeats skipped)."""
    snapshot = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    assert snapshot["type"] == "snapshot", snapshot
    got: list[dict[str, Any]] = []
    while not (got and got[-1]["type"] == "status_update" and got[-1]["payload"]["status"] in TERMINAL):
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if message["type"] != "heartbeat":
            got.append(message)
    return snapshot, got


async def _next_is_heartbeat(ws: Any) -> bool:
    """Nothing but a heartbeat comes next: the stream had every event."""
    return bool(json.loads(await asyncio.wait_for(ws.recv(), 10 * HEARTBEAT_S + 10))["type"] == "heartbeat")


def _numbers(snapshot: dict[str, Any], got: list[dict[str, Any]]) -> list[int]:
    return [snapshot["seq"], *(m["seq"] for m in got)]


async def test_a_run_stream_numbers_its_events_and_a_resume_with_since_gets_exactly_what_it_missed() -> None:
    with live_server(ws_heartbeat_s=HEARTBEAT_S) as srv:
        run_id = await _start(srv.base_url)
        async with connect(f"{srv.ws_url}/api/v1/ws/status?run_id={run_id}") as ws:
            snapshot, live = await _read_to_end(ws)
        numbers = _numbers(snapshot, live)
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # consecutive: no gap, no repeat
        assert {m["type"] for m in live} >= {"status_update", "trade_execution"}
        assert live[-1]["payload"]["status"] == "completed"

        async with connect(f"{srv.ws_url}/api/v1/ws/status?run_id={run_id}&since=0") as ws:
            first, everything = await _read_to_end(ws)
            assert await _next_is_heartbeat(ws)
        assert first["seq"] == 0 and [m["seq"] for m in everything] == list(range(1, len(everything) + 1))
        assert everything[-len(live) :] == live  # the same events, numbers and timestamps as they were sent live

        middle = live[len(live) // 2]["seq"]
        async with connect(f"{srv.ws_url}/api/v1/ws/status?run_id={run_id}&since={middle}") as ws:
            resumed, rest = await _read_to_end(ws)
            assert await _next_is_heartbeat(ws)
        assert resumed["seq"] == middle and resumed["payload"]["status"] == "completed"
        assert rest == [m for m in everything if m["seq"] > middle]


@pytest.mark.parametrize("since", ["-1", "1.5", "abc", "%D9%A3", str(2**62 + 1)])
async def test_a_since_that_is_not_an_event_number_is_refused_with_what_is_accepted(since: str) -> None:
    with live_server() as srv:
        run_id = await _start(srv.base_url)
        async with connect(f"{srv.ws_url}/api/v1/ws/status?run_id={run_id}&since={since}") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert "since must be a whole number from 0" in closed.value.rcvd.reason


# The fixture of the shared-auth tests: a PostgreSQL database of the test's own, with Redis (a prefix of its own)
# or NOTIFY for the notices.
deployment = shared


@contextlib.contextmanager
def two_servers(deployment: Backend) -> Iterator[tuple[LiveServer, LiveServer]]:
    settings, backend = deployment
    with (
        LiveServer(settings, ws_heartbeat_s=HEARTBEAT_S, **backend) as a,
        LiveServer(settings, ws_heartbeat_s=HEARTBEAT_S, **backend) as b,
    ):
        yield a, b


async def test_a_run_executed_behind_one_server_is_followed_in_full_through_another(deployment: Backend) -> None:
    with two_servers(deployment) as (a, b):
        run_id = await _start(a.base_url)
        async with (
            connect(f"{a.ws_url}/api/v1/ws/status?run_id={run_id}&since=0") as on_a,
            connect(f"{b.ws_url}/api/v1/ws/status?run_id={run_id}&since=0") as on_b,
        ):
            (_, from_a), (snapshot_b, from_b) = await asyncio.gather(_read_to_end(on_a), _read_to_end(on_b))
            assert await _next_is_heartbeat(on_b)
        assert snapshot_b["payload"]["run_id"] == run_id  # B holds no such run: its snapshot is the stored row
        assert [m["seq"] for m in from_b] == list(range(1, len(from_b) + 1))
        assert from_b == from_a and from_b[-1]["payload"]["status"] == "completed"

        middle = from_b[len(from_b) // 2]["seq"]
        async with connect(f"{b.ws_url}/api/v1/ws/status?run_id={run_id}&since={middle}") as again:
            resumed, rest = await _read_to_end(again)
        assert resumed["payload"]["status"] == "completed" and rest == from_a[middle:]

        async with connect(f"{b.ws_url}/api/v1/ws/status?run_id=nope") as unknown:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(unknown.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_a_run_executed_behind_one_server_is_read_and_stopped_through_another(deployment: Backend) -> None:
    with two_servers(deployment) as (a, b):
        async with httpx.AsyncClient(base_url=a.base_url) as on_a, httpx.AsyncClient(base_url=b.base_url) as on_b:
            r = await on_a.post("/api/v1/runs", json={**SLOW_RUN, "mode": "backtest"})
            assert r.status_code == 201, r.text
            run_id = r.json()["run_id"]
            status = {}
            for _ in range(600):  # until A has published a status B can read (a safety bound, not a speed one)
                status = (await on_b.get(f"/api/v1/runs/{run_id}/status")).json()
                if status.get("status") == "running":
                    break
                await asyncio.sleep(0.05)
            assert status["run_id"] == run_id and status["status"] == "running" and status["mode"] == "backtest"

            stop = await on_b.post(f"/api/v1/runs/{run_id}/stop")
            assert stop.status_code == 200, stop.text
            assert stop.json()["status"] == "stopped" and "by the server process running it" in stop.json()["message"]
            assert (await on_a.get(f"/api/v1/runs/{run_id}/status")).json()["status"] == "stopped"
            assert (await on_b.get(f"/api/v1/runs/{run_id}/status")).json()["status"] == "stopped"

            again = await on_b.post(f"/api/v1/runs/{run_id}/stop")
            assert again.status_code == 409 and again.json()["error"]["code"] == "NO_ACTIVE_RUN"
            missing = await on_b.get("/api/v1/runs/0123456789abcdef0123456789abcdef/status")
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"


@pytest.fixture
def postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    with app_database("postgresql", monkeypatch) as settings:
        yield settings


async def test_another_users_run_on_another_server_is_not_found_to_read_stop_or_follow(postgres: Settings) -> None:
    web = {"auth_mode": "on", "jwt_secret_key": SECRET, "rate_limit_per_minute": 100_000}
    with LiveServer(postgres, **web) as a, LiveServer(postgres, **web) as b:
        engine = make_engine(postgres.database_url)  # this loop's own: the servers' engines live on theirs
        try:
            for name in ("ola", "kari"):
                await service.create_user(store=AuthStore(engine), username=name, password=PASSWORD)
        finally:
            await engine.dispose()
        async with httpx.AsyncClient(base_url=a.base_url) as on_a, httpx.AsyncClient(base_url=b.base_url) as on_b:
            ola = {"Authorization": f"Bearer {(await login(on_a, 'ola'))['access_token']}"}
            kari = {"Authorization": f"Bearer {(await login(on_b, 'kari'))['access_token']}"}
            r = await on_a.post("/api/v1/runs", json={**SLOW_RUN, "mode": "backtest"}, headers=ola)
            assert r.status_code == 201, r.text
            run_id = r.json()["run_id"]
            for method, path in (("GET", "status"), ("POST", "stop")):
                theirs = await on_b.request(method, f"/api/v1/runs/{run_id}/{path}", headers=kari)
                assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "NOT_FOUND", theirs.text
            token = kari["Authorization"].removeprefix("Bearer ")
            async with connect(f"{b.ws_url}/api/v1/ws/status?run_id={run_id}&since=0&token={token}") as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            mine = await on_b.get(f"/api/v1/runs/{run_id}/status", headers=ola)  # the owner, through B
            assert mine.status_code == 200 and mine.json()["run_id"] == run_id
            assert (await on_b.post(f"/api/v1/runs/{run_id}/stop", headers=ola)).json()["status"] == "stopped"


async def _kill_listeners(server: LiveServer, deployment: Backend) -> Any:
    """Kill the connection the server's event listener holds (pg_terminate_backend, or Redis CLIENT KILL)."""
    settings, backend = deployment
    notices = server.app.state.event_log.relay.notices
    if backend:
        admin = redis.Redis.from_url(REDIS_URL)
        try:
            name = redis_client_name(f"{backend['redis_prefix']}run-events")
            listeners = [c["id"] for c in admin.client_list() if c["name"] == name and c["cmd"] == "subscribe"]
            assert len(listeners) == 2  # one per server
            for client_id in listeners:
                admin.client_kill_filter(_id=client_id)
        finally:
            admin.close()
    else:
        engine = make_engine(settings.database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": notices.backend_pid})
        finally:
            await engine.dispose()
    return notices


async def test_a_stream_whose_servers_listener_is_killed_mid_run_still_gets_every_event(deployment: Backend) -> None:
    month = {**SLOW_RUN, "end_date": "2024-01-29T00:00:00Z"}  # 672 bars at 5 ms or more: 3.4 s or more
    with two_servers(deployment) as (a, b):
        async with httpx.AsyncClient(base_url=a.base_url) as on_a:
            r = await on_a.post("/api/v1/runs", json={**month, "mode": "backtest"})
            assert r.status_code == 201, r.text
            run_id = r.json()["run_id"]
        async with connect(f"{b.ws_url}/api/v1/ws/status?run_id={run_id}&since=0") as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "snapshot"
            first: list[dict[str, Any]] = []
            while len(first) < 3:  # the run is under way
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if message["type"] != "heartbeat":
                    first.append(message)
            notices = await _kill_listeners(b, deployment)
            rest: list[dict[str, Any]] = []
            while not (rest and rest[-1]["type"] == "status_update" and rest[-1]["payload"]["status"] in TERMINAL):
                message = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if message["type"] != "heartbeat":
                    rest.append(message)
        assert notices.connections >= 2  # it listened again (after half a second)
        got = first + rest
        assert [m["seq"] for m in got] == list(range(1, len(got) + 1)) and rest[-1]["payload"]["status"] == "completed"
        assert any(m["type"] == "trade_execution" for m in rest)  # events came after the kill, none was lost
