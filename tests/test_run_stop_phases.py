"""`POST /run/stop` answers within a second in every phase, and the status stream sees every phase change."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from cracktrader.settings import get_settings
from web_support import YEAR_1H, app_client, live_server

# These stop runs inside slow exchange calls: their workers finish the call after the test, so each test waits for
# them (and the suite's later backtests do not queue behind a slot they still hold).
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("pools_left_idle")]

KLINES = "/api/v3/klines"
PAGE_S = 0.3  # each page of candles takes this long by design
# 30,240 one-minute bars: 31 pages of 1,000, so at least 9.3 s of downloading by construction.
DOWNLOAD_RUN = {
    **YEAR_1H,
    "strategy_name": "SmaCross",
    "exchange": "binance",
    "timeframe": "1m",
    "start_date": "2024-05-01T00:00:00Z",
    "end_date": "2024-05-22T00:00:00Z",
}
PAGES = 31


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _status(c: httpx.AsyncClient) -> dict[str, Any]:
    return dict((await c.get("/api/v1/status")).json())


async def _until(c: httpx.AsyncClient, done: Any, what: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll `/status` until `done(status)` (the timeout is a safety net, not a speed bound)."""
    deadline = time.monotonic() + timeout
    while not done(status := await _status(c)):
        assert time.monotonic() < deadline, f"never {what}: {status}"
        await asyncio.sleep(0.02)
    return status


async def _timed_stop(c: httpx.AsyncClient) -> tuple[dict[str, Any], float]:
    t0 = time.monotonic()
    r = await c.post("/api/v1/run/stop")
    elapsed = time.monotonic() - t0
    assert r.status_code == 200, r.text
    return dict(r.json()), elapsed


async def test_stop_while_candles_download_page_by_page_is_stopped_within_a_second(fake_binance: Any) -> None:
    fake_binance.delays[KLINES] = PAGE_S
    async with app_client(get_settings()) as c:
        assert (await c.post("/api/v1/run/backtest", json=DOWNLOAD_RUN)).status_code == 200
        await _until(c, lambda s: len(fake_binance.requests_to(KLINES)) >= 2, "two pages into the download")
        pages_at_stop = len(fake_binance.requests_to(KLINES))
        stop, elapsed = await _timed_stop(c)
        assert (await _status(c))["status"] == "stopped"
        final = await _until(c, lambda s: s["phase"] is None, "done saving")
    assert stop["status"] == "stopped" and elapsed < 1.0, (stop, elapsed)
    assert final["status"] == "stopped" and final["bars_processed"] == 0
    # The download gave up at the next page, not after all of them.
    assert len(fake_binance.requests_to(KLINES)) <= pages_at_stop + 1 < PAGES


async def test_stop_while_the_exchange_lists_its_markets_is_stopped_within_a_second(fake_binance: Any) -> None:
    async with app_client(get_settings()) as c:
        fake_binance.delays["/api/v3/exchangeInfo"] = 3.0  # as slow as a real exchange's market list
        assert (await c.post("/api/v1/run/backtest", json=DOWNLOAD_RUN)).status_code == 200
        listed = len(fake_binance.requests_to("/api/v3/exchangeInfo"))
        await _until(
            c, lambda s: len(fake_binance.requests_to("/api/v3/exchangeInfo")) > listed, "loading the market list"
        )
        stop, elapsed = await _timed_stop(c)
        final = await _until(c, lambda s: s["phase"] is None, "done saving")
    assert stop["status"] == "stopped" and elapsed < 1.0, (stop, elapsed)
    assert final["status"] == "stopped" and fake_binance.requests_to(KLINES) == []


class SaveGate:
    """Holds the run store's `save_results` until the test opens it, so a run stays in its saving phase."""

    def __init__(self, store: Any) -> None:
        self.real = store.save_results
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()
        store.save_results = self._save

    async def _save(self, *args: Any, **kwargs: Any) -> None:
        self.entered.set()
        await self.opened.wait()
        await self.real(*args, **kwargs)


async def test_stop_while_saving_answers_at_once_and_the_run_completes_with_all_its_results() -> None:
    async with app_client() as c:
        gate = SaveGate(c.app.state.manager.store)  # type: ignore[attr-defined]
        assert (await c.post("/api/v1/run/backtest", json=YEAR_1H)).status_code == 200
        await asyncio.wait_for(gate.entered.wait(), 60)
        assert (await _status(c))["phase"] == "saving"
        stop, elapsed = await _timed_stop(c)
        gate.opened.set()
        final = await _until(c, lambda s: s["status"] in ("completed", "failed", "stopped"), "finished")
    assert elapsed < 1.0 and stop["status"] == "running" and "being saved" in stop["message"], (stop, elapsed)
    assert final["status"] == "completed" and final["bars_processed"] == final["bars_total"] == 8784


async def test_status_stream_pushes_every_phase_loading_simulating_saving_completed() -> None:
    with live_server() as srv:
        async with connect(f"{srv.ws_url}/api/v1/ws/status") as ws:
            await asyncio.wait_for(ws.recv(), 10)  # snapshot
            async with httpx.AsyncClient(base_url=srv.base_url) as c:
                assert (await c.post("/api/v1/run/backtest", json=YEAR_1H)).status_code == 200
            updates: list[dict[str, Any]] = []
            while not updates or updates[-1]["status"] not in ("completed", "failed", "stopped"):
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if message["type"] == "status_update":
                    updates.append(message["payload"])
    steps = [(u["status"], (u["phase"] or "").split(" ")[0] or None) for u in updates]
    collapsed = [s for i, s in enumerate(steps) if i == 0 or steps[i - 1] != s]
    assert collapsed == [
        ("starting", "queued"),
        ("running", "loading_data"),
        ("running", "simulating"),
        ("running", "saving"),
        ("completed", None),
    ]
    saving = next(u for u in updates if u["phase"] == "saving")
    assert saving["bars_processed"] == saving["bars_total"] == 8784  # the simulation had ended


async def test_stop_before_the_queued_run_began_stays_stopped() -> None:
    from cracktrader.runs.config import BacktestConfig

    async with app_client() as c:
        manager = c.app.state.manager  # type: ignore[attr-defined]
        slot = manager.slot(None)
        await slot.start_backtest(BacktestConfig(**YEAR_1H))
        assert slot.state.phase == "queued"  # its task has not run yet
        updates = manager.bus.subscribe(frozenset({"status_update"}))
        stop = await slot.stop()
        final = await _until(c, lambda s: s["phase"] is None, "done saving")
        statuses = []
        while not updates.queue.empty():
            event = updates.queue.get_nowait()
            assert event is not None
            statuses.append(event.payload["status"])
    assert stop["status"] == "stopped"
    assert final["status"] == "stopped" and final["bars_processed"] == 0
    assert statuses and set(statuses) == {"stopped"}  # never "running" again once announced stopped
