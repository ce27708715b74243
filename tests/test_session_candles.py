"""A session's live chart: `candle` events on `/ws/status?candles=true` and `GET /runs/{id}/recent-candles`."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from auth_support import PASSWORD, SECRET, auth_client, bearer, login
from cracktrader.auth import service
from cracktrader.auth.store import AuthStore
from cracktrader.db.engine import make_engine
from cracktrader.settings import Settings
from web_support import LiveServer, app_client, live_server

pytestmark = pytest.mark.anyio
SYMBOLS = ["BTC/USDT", "ETH/USDT"]
START, END = "2024-01-01T00:00:00Z", "2024-01-05T00:00:00Z"  # 96 hourly bars


def _replay(speed: float, symbols: list[str] = SYMBOLS) -> dict[str, Any]:
    """A paper session replaying 96 hourly synthetic bars at `speed` times real time."""
    return {
        "strategy_name": "SmaCross",
        "strategy_params": {"fast": 3, "slow": 8},
        "symbols": symbols,
        "timeframe": "1h",
        "exchange": "synthetic",
        "mode": "paper",
        "exchange_config": {"paper": {"replay": {"start": START, "end": END, "speed": speed}}},
    }


async def _follow(ws: ClientConnection, run_id: str) -> list[dict[str, Any]]:
    """Every event of `run_id` until its `completed` status (the snapshot first is skipped)."""
    assert json.loads(await ws.recv())["type"] == "snapshot"
    seen = []
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), timeout=60))
        if event["payload"].get("run_id") != run_id:
            continue
        seen.append(event)
        if event["type"] == "status_update" and event["payload"]["status"] == "completed":
            return seen


async def _drain(ws: ClientConnection) -> list[dict[str, Any]]:
    """What the socket still holds (it goes quiet once the run ended)."""
    out = []
    with contextlib.suppress(TimeoutError):
        while True:
            out.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=0.3)))
    return out


def _rows(columns: dict[str, list[Any]]) -> list[tuple[Any, ...]]:
    keys = ("timestamp", "open", "high", "low", "close", "volume")
    return list(zip(*(columns[k] for k in keys), strict=True))


async def test_the_stream_sends_each_closed_candle_in_order_equal_to_the_fed_candles() -> None:
    # One bar each 50 ms: the stream is open before the session starts, so it sees every candle from the first.
    with live_server() as srv:
        async with (
            connect(f"{srv.ws_url}/api/v1/ws/status?run_id=*&candles=true") as ws,
            connect(f"{srv.ws_url}/api/v1/ws/status?run_id=*") as plain,
            httpx.AsyncClient(base_url=srv.base_url, timeout=30) as c,
        ):
            r = await c.post("/api/v1/runs", json=_replay(72_000))
            assert r.status_code == 201, r.text
            run_id = r.json()["run_id"]
            seen = await _follow(ws, run_id)
            plain_events = await _drain(plain)
            stored = {
                s: (
                    await c.get(
                        "/api/v1/candles",
                        params={"exchange": "synthetic", "symbol": s, "timeframe": "1h", "start": START, "end": END},
                    )
                ).json()
                for s in SYMBOLS
            }
            recent = {
                s: (await c.get(f"/api/v1/runs/{run_id}/recent-candles", params={"symbol": s, "limit": 5000})).json()
                for s in SYMBOLS
            }
    candles = [e["payload"] for e in seen if e["type"] == "candle"]
    assert len(candles) == 96 * len(SYMBOLS)
    for symbol in SYMBOLS:
        mine = [k for k in candles if k["symbol"] == symbol]
        assert all(k["run_id"] == run_id and k["timeframe"] == "1h" for k in mine)
        streamed = [(k["t"], k["o"], k["h"], k["l"], k["c"], k["v"]) for k in mine]
        # The candles the session was fed (the store's, generated for synthetic), in order, value for value.
        assert streamed == _rows(stored[symbol]["candles"])
        assert streamed == _rows(recent[symbol]["candles"])
        assert recent[symbol]["bars"] == 96 and recent[symbol]["truncated"] is False
    # Each bar's candles come before that bar's status_update: a chart is never behind the numbers.
    bars_at_update = []
    closed = 0
    for e in seen:
        if e["type"] == "candle":
            closed += 1
        elif e["type"] == "status_update" and e["payload"]["bars_processed"]:
            bars_at_update.append((e["payload"]["bars_processed"], closed))
    assert all(closed >= bars * len(SYMBOLS) for bars, closed in bars_at_update)
    # Without `candles=true` the stream is as before: not one candle.
    assert plain_events and not [e for e in plain_events if e["type"] == "candle"]


async def test_recent_candles_are_the_latest_ones_and_bad_requests_are_clear_4xx() -> None:
    async with app_client() as c:
        run_id = (await c.post("/api/v1/runs", json=_replay(1e9, ["BTC/USDT"]))).json()["run_id"]
        for _ in range(2000):
            if (await c.get(f"/api/v1/runs/{run_id}/status")).json()["status"] == "completed":
                break
            await asyncio.sleep(0.005)
        whole = (await c.get(f"/api/v1/runs/{run_id}/recent-candles")).json()
        last = (await c.get(f"/api/v1/runs/{run_id}/recent-candles", params={"limit": 10})).json()
        other = await c.get(f"/api/v1/runs/{run_id}/recent-candles", params={"symbol": "ETH/USDT"})
        unknown = await c.get("/api/v1/runs/nope/recent-candles")
        zero = await c.get(f"/api/v1/runs/{run_id}/recent-candles", params={"limit": 0})
        huge = await c.get(f"/api/v1/runs/{run_id}/recent-candles", params={"limit": 5001})
    assert whole["symbol"] == "BTC/USDT" and whole["symbols"] == ["BTC/USDT"] and whole["status"] == "completed"
    assert len(whole["candles"]["timestamp"]) == 96 and whole["truncated"] is False
    assert last["truncated"] is True and last["bars"] == 96
    assert _rows(last["candles"]) == _rows(whole["candles"])[-10:]
    assert other.status_code == 404 and other.json()["error"]["code"] == "SYMBOL_NOT_IN_RUN"
    assert other.json()["error"]["details"]["symbols"] == ["BTC/USDT"]
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NOT_FOUND"
    assert zero.status_code == 422 and huge.status_code == 422


async def test_another_users_session_candles_are_not_found() -> None:
    async with auth_client() as c:
        alice, bob = await bearer(c, "alice"), await bearer(c, "bob")
        run_id = (await c.post("/api/v1/runs", json=_replay(1e9, ["BTC/USDT"]), headers=alice)).json()["run_id"]
        mine = await c.get(f"/api/v1/runs/{run_id}/recent-candles", headers=alice)
        theirs = await c.get(f"/api/v1/runs/{run_id}/recent-candles", headers=bob)
    assert mine.status_code == 200, mine.text
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "NOT_FOUND"


async def test_candle_events_go_only_to_the_sessions_owner(db_settings: Settings) -> None:
    with LiveServer(db_settings, auth_mode="on", jwt_secret_key=SECRET, rate_limit_per_minute=100_000) as srv:
        store = AuthStore(make_engine(db_settings.database_url))
        try:
            for name in ("alice", "bob"):
                await service.create_user(store=store, username=name, password=PASSWORD)
        finally:
            await store._engine.dispose()
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as c:
            alice, bob = (await login(c, "alice"))["access_token"], (await login(c, "bob"))["access_token"]
            url = f"{srv.ws_url}/api/v1/ws/status?run_id=*&candles=true&token="
            async with connect(url + alice) as hers, connect(url + bob) as his:
                body = _replay(72_000, ["BTC/USDT"])
                r = await c.post("/api/v1/runs", json=body, headers={"Authorization": f"Bearer {alice}"})
                run_id = r.json()["run_id"]
                seen = await _follow(hers, run_id)
                assert json.loads(await his.recv())["type"] == "snapshot"
                his_events = await _drain(his)
    assert len([e for e in seen if e["type"] == "candle"]) == 96
    assert not [e for e in his_events if e["payload"].get("run_id") == run_id]


def test_the_python_sdk_streams_typed_candles_and_reads_the_recent_ones() -> None:
    from cracktrader.client import CrackTraderAPI, SessionCandle

    with (
        live_server() as srv,
        CrackTraderAPI(srv.base_url) as api,
        api.stream_status(run_id="*", candles=True) as events,
    ):
        assert events.recv(timeout=10).type == "snapshot"
        body = _replay(72_000, ["BTC/USDT"])
        started = api.start_session(
            "SmaCross",
            symbols="BTC/USDT",
            timeframe="1h",
            exchange="synthetic",
            exchange_config=body["exchange_config"],
        )
        run_id = started.run_id
        streamed: list[SessionCandle] = []
        for event in events:
            if event.payload.get("run_id") != run_id:
                continue
            candle = event.candle()
            if candle is not None:
                streamed.append(candle)
            status = event.status()
            if status is not None and status.status == "completed":
                break
        recent = api.recent_candles(run_id, symbol="BTC/USDT", limit=5000)
    assert len(streamed) == 96 and recent.bars == 96
    assert [(k.t, k.open, k.high, k.low, k.close, k.volume) for k in streamed] == _rows(recent.candles.model_dump())
