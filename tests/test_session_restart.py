"""A paper session survives a restart: real server processes on one SQLite file, one killed by SIGKILL.

1s synthetic candles in real time, with short leases (CRACKTRADER_SERVER_LEASE_TTL_S=2). The assertions are
invariants (no duplicate fill, no gap in the equity, the same outcome as an uninterrupted run over the same
candles); the only waits are for conditions (a candle has closed, a server has taken the session over).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cracktrader.clock import ManualClock
from cracktrader.db.engine import make_engine
from cracktrader.db.migrate import upgrade
from cracktrader.db.session_store import SessionStore, StoredSession
from cracktrader.runs.config import LiveConfig
from cracktrader.runs.results import from_backtest, full_document
from cracktrader.runs.session import run_session
from cracktrader.runs.trade import prepare_paper
from cracktrader.settings import get_settings
from web_support import TEST_STRATEGY_DIR, ServerProcess, with_test_strategies

pytestmark = pytest.mark.anyio
SECOND = 1000
TTL_S = 2.0
SESSION: dict[str, Any] = {
    "strategy_name": "RestingLimit",
    "strategy_params": {"timeframe": "1s", "min_ahead": 6, "max_ahead": 15},
    "symbols": ["BTC/USDT"],
    "timeframe": "1s",
    "exchange": "synthetic",
    "mode": "paper",
}
# Safety nets for a loaded machine, never speed bounds: each wait ends as soon as its condition holds.
PATIENCE_S = 180.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
async def rows(tmp_path: Path) -> AsyncIterator[tuple[str, SessionStore]]:
    """The servers' database URL and a SessionStore of the test's own on it."""
    url = f"sqlite+aiosqlite:///{(tmp_path / 'shared.db').as_posix()}"
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    try:
        yield url, SessionStore(engine)
    finally:
        await engine.dispose()


def _server(url: str, tmp_path: Path, name: str) -> ServerProcess:
    env = {
        "CRACKTRADER_DATABASE_URL": url,
        "CRACKTRADER_STRATEGY_DIR": str(TEST_STRATEGY_DIR),
        "CRACKTRADER_SERVER_LEASE_TTL_S": str(TTL_S),
        "CRACKTRADER_SERVER_HEARTBEAT_S": "0.25",
    }
    return ServerProcess(env, tmp_path / f"{name}.log")


async def _until(what: str, check: Any) -> Any:
    deadline = time.monotonic() + PATIENCE_S
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what}")
        await asyncio.sleep(0.05)


def _plans(stored: StoredSession | None) -> list[dict[str, Any]]:
    import json

    if stored is None or stored.strategy_state is None:
        return []
    return list(json.loads(stored.strategy_state)["plans"])


async def _uninterrupted(stored: StoredSession) -> dict[str, Any]:
    """The document of the same session without a break over the same candles, ended as a stop ends it."""
    first_live = int(stored.candles[stored.warmup_bars][0])
    config = LiveConfig.model_validate(SESSION)
    settings = with_test_strategies(get_settings())
    plan = prepare_paper(config, clock=ManualClock(first_live + 10, auto=True), settings=settings)
    await run_session(plan.session, plan.feed, history=plan.history, max_bars=stored.bars - stored.warmup_bars)
    sim = plan.session.sim
    for order in list(sim.open_orders):  # a stop cancels the open orders
        sim.cancel(plan.session.bars - 1, order.id)
    result = from_backtest(plan.session.result(), run_id="x", config={}, start_time="", end_time="")
    return _comparable(full_document(result))


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("run_id", "config", "start_time", "end_time", "status", "page")}


async def test_a_paper_session_survives_sigkill_and_resumes_on_the_next_server(
    rows: tuple[str, SessionStore], tmp_path: Path
) -> None:
    url, store = rows
    first = await asyncio.to_thread(_server(url, tmp_path, "first").start)
    second: ServerProcess | None = None
    try:
        async with httpx.AsyncClient(base_url=first.base_url, timeout=30) as c:
            r = await c.post("/api/v1/runs", json=SESSION)
            assert r.status_code == 201, r.text
            run_id = r.json()["run_id"]

        async def resting_ahead() -> tuple[StoredSession, dict[str, Any]] | None:
            """A stored, filled entry and a resting limit whose crossing candle closes 2.5 s from now or later."""
            stored = await store.load(run_id)
            plans = _plans(stored)
            if stored is None or not plans or stored.last_bar_ts is None or not await store.fills(run_id):
                return None
            plan = plans[-1]
            ahead = plan["fill_ts"] + SECOND - _now_ms()
            return (stored, plan) if plan["fill_ts"] > stored.last_bar_ts and ahead >= 2500 else None

        _, plan = await _until("a resting limit order", resting_ahead)
        fills_before = await store.fills(run_id)
        first.kill()
        killed_ms = _now_ms()
        at_kill = await store.load(run_id)
        assert at_kill is not None and at_kill.last_bar_ts is not None
        assert at_kill.last_bar_ts < plan["fill_ts"] and killed_ms < plan["fill_ts"] + SECOND

        async def crossed() -> bool:  # the candle that crosses the limit has closed while no server runs
            return _now_ms() > plan["fill_ts"] + 2 * SECOND

        await _until("the crossing candle to close", crossed)
        second = await asyncio.to_thread(_server(url, tmp_path, "second").start)

        async def resumed() -> StoredSession | None:
            stored = await store.load(run_id)
            done = stored is not None and stored.fencing_token == 2 and (stored.last_bar_ts or 0) > plan["fill_ts"]
            return stored if done else None

        taken = await _until("the second server to resume the session", resumed)
        resumed_ms = int(taken.owner_since.timestamp() * 1000)
        async with httpx.AsyncClient(base_url=second.base_url, timeout=30) as c:
            status = (await c.get(f"/api/v1/runs/{run_id}/status")).json()
            assert status["status"] == "running" and status["condition"] == "ok"
            assert status["trade_count"] >= len(fills_before) + 1  # the crossing fill at least
            held = {p["symbol"]: p["size"] for p in status["positions"]}
            stored_now = {p["symbol"]: p["size"] for p in await store.positions(run_id) if p["size"]}
            assert held == stored_now or status["bars_processed"] > 0  # the status and the rows agree (or a bar passed)
            stop = await c.post(f"/api/v1/runs/{run_id}/stop")
            assert stop.status_code == 200 and stop.json()["status"] == "stopped", stop.text
            results = (await c.get(f"/api/v1/runs/{run_id}/results")).json()
        fills = await store.fills(run_id)
        stored = await store.load(run_id)
    finally:
        first.kill()
        if second is not None:
            second.stop()
    assert stored is not None
    # The resting limit the market crossed while the servers were down filled at its price, inside the downtime.
    (crossing,) = [f for f in fills if f["order_id"] == plan["order_id"]]
    assert crossing["price"] == plan["price"] and crossing["ts"] == plan["fill_ts"]
    assert killed_ms < crossing["ts"] + SECOND <= resumed_ms
    # Orders, fills and equity from before the kill are intact; nothing is recorded twice; no candle is missing.
    assert fills[: len(fills_before)] == fills_before
    assert len({(f["symbol"], f["trade_id"]) for f in fills}) == len(fills)
    stamps = [int(r[0]) for r in stored.equity]
    assert stamps == list(range(stamps[0], stamps[-1] + SECOND, SECOND))
    assert len(results["equity_curve"]) == len(stamps) and results["status"] == "stopped"
    assert [t["order_id"] for t in results["trades"]] == [f["order_id"] for f in fills]
    # Same cash, positions, orders, fills and equity as an uninterrupted run over the same candles.
    assert _comparable(results) == await _uninterrupted(stored)
    print(
        f"restart: killed at bar {at_kill.last_bar_ts}, resumed {resumed_ms - killed_ms} ms later, "
        f"{(resumed_ms - killed_ms) // SECOND} missed candles replayed; crossing fill at {crossing['ts']} "
        f"price {crossing['price']}; {len(fills)} fills, {len(stamps)} equity points"
    )


async def test_two_live_servers_never_both_drive_a_session(rows: tuple[str, SessionStore], tmp_path: Path) -> None:
    url, store = rows
    first = await asyncio.to_thread(_server(url, tmp_path, "first").start)
    second: ServerProcess | None = None
    try:
        async with httpx.AsyncClient(base_url=first.base_url, timeout=30) as a:
            run_id = (await a.post("/api/v1/runs", json=SESSION)).json()["run_id"]
            second = await asyncio.to_thread(_server(url, tmp_path, "second").start)
            async with httpx.AsyncClient(base_url=second.base_url, timeout=30) as b:
                watched_from = _now_ms()
                owner_a = await store.owner(run_id)
                bars_seen: list[int] = []

                async def three_leases_later() -> bool:
                    # Meanwhile, at every look: the first server owns and drives it, the second does not.
                    assert await store.owner(run_id) == owner_a
                    # B holds no such run, yet answers its status as A publishes it.
                    assert (await b.get(f"/api/v1/runs/{run_id}/status")).json()["status"] == "running"
                    bars_seen.append((await a.get(f"/api/v1/runs/{run_id}/status")).json()["bars_processed"])
                    return _now_ms() - watched_from > 3 * TTL_S * 1000

                await _until("three lease periods", three_leases_later)
                assert owner_a is not None and owner_a[1] == 1 and bars_seen[-1] > bars_seen[0]
                first.kill()
                killed_ms = _now_ms()

                async def taken_over() -> bool:  # claimed, then resumed: B stores bars that closed after the kill
                    owner = await store.owner(run_id)
                    if owner is None or owner[1] != 2:
                        return False
                    stored = await store.load(run_id)
                    return stored is not None and (stored.last_bar_ts or 0) > killed_ms

                await _until("the takeover", taken_over)
                status = (await b.get(f"/api/v1/runs/{run_id}/status")).json()
                assert status["status"] == "running"
                await b.post(f"/api/v1/runs/{run_id}/stop")
        stored = await store.load(run_id)
    finally:
        first.kill()
        if second is not None:
            second.stop()
    assert stored is not None and stored.owner_server_id != owner_a[0]
    stamps = [int(r[0]) for r in stored.equity]
    assert stamps == list(range(stamps[0], stamps[-1] + SECOND, SECOND))
