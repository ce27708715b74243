"""The right run, always: results while a run saves, reset and delete during a save, leases, admission, retention."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cracktrader.db.engine import make_engine
from cracktrader.db.run_store import INTERRUPTED_ERROR, RunStore
from cracktrader.runs.config import BacktestConfig
from cracktrader.runs.events import EventBus
from cracktrader.runs.registry import RunRegistry
from cracktrader.settings import Settings
from web_support import SLOW_RUN, YEAR_1H, app_client, released_run, wait_for_status, with_test_strategies

pytestmark = pytest.mark.anyio

SHORT = {**YEAR_1H, "end_date": "2024-02-01T00:00:00Z"}


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio (the only loop the app uses)."""
    return "asyncio"


def _app(client: httpx.AsyncClient) -> Any:
    return client._transport.app  # type: ignore[attr-defined]


class SaveGate:
    """Holds every `save_results` of a store until the test opens it, so a run stays in its saving phase."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.real = store.save_results
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()
        store.save_results = self._save  # type: ignore[method-assign]

    async def _save(self, *args: Any, **kwargs: Any) -> None:
        self.entered.set()
        await self.opened.wait()
        await self.real(*args, **kwargs)


@pytest.fixture
async def gated(db_settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, SaveGate]]:
    """An app on each database whose result saves wait for the test."""
    async with app_client(db_settings) as client:
        manager = _app(client).state.manager
        yield client, SaveGate(manager.store)


async def _finished(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    for _ in range(2_000):
        status = (await client.get("/api/v1/status")).json()
        if status["run_id"] == run_id and status["status"] in ("completed", "failed", "stopped"):
            return dict(status)
        await asyncio.sleep(0.01)
    raise AssertionError(f"run {run_id} did not finish")


async def test_results_after_stop_reset_start_during_a_save_are_the_new_runs(
    gated: tuple[httpx.AsyncClient, SaveGate],
) -> None:
    client, gate = gated
    first = (await client.post("/api/v1/run/backtest", json=SLOW_RUN)).json()["run_id"]
    await wait_for_status(client, "running")
    assert (await client.post("/api/v1/run/stop")).json()["status"] == "stopped"
    await asyncio.wait_for(gate.entered.wait(), 30)  # the stopped run is saving now

    reset = asyncio.create_task(client.delete("/api/v1/run/reset"))
    await asyncio.sleep(0.05)
    assert not reset.done()  # the reset waits for the save instead of leaving it running behind the next run
    gate.opened.set()
    assert (await reset).json()["status"] == "idle"
    second = (await client.post("/api/v1/run/backtest", json=SHORT)).json()["run_id"]
    during = (await client.get("/api/v1/results")).json()
    await _finished(client, second)
    after = (await client.get("/api/v1/results")).json()

    assert during["run_id"] == second
    assert after["run_id"] == second and after["status"] == "completed" and after["equity_curve"]
    assert (await client.get(f"/api/v1/runs/{first}/results")).json()["status"] == "stopped"


async def test_results_of_a_run_being_saved_are_served_from_memory(gated: tuple[httpx.AsyncClient, SaveGate]) -> None:
    client, gate = gated
    run_id = (await client.post("/api/v1/run/backtest", json=SHORT)).json()["run_id"]
    await asyncio.wait_for(gate.entered.wait(), 30)

    results = (await client.get("/api/v1/results")).json()
    by_id = (await client.get(f"/api/v1/runs/{run_id}/results")).json()
    gate.opened.set()
    await _finished(client, run_id)

    assert results["run_id"] == run_id and len(results["equity_curve"]) == 744
    assert by_id["equity_curve"] == results["equity_curve"]
    stored = (await client.get(f"/api/v1/runs/{run_id}/results")).json()
    assert stored["equity_curve"] == results["equity_curve"] and stored["trades"] == results["trades"]


async def test_a_run_deleted_while_saving_is_gone_everywhere(gated: tuple[httpx.AsyncClient, SaveGate]) -> None:
    client, gate = gated
    run_id = (await client.post("/api/v1/run/backtest", json=SLOW_RUN)).json()["run_id"]
    await wait_for_status(client, "running")
    await client.post("/api/v1/run/stop")
    await asyncio.wait_for(gate.entered.wait(), 30)

    delete = asyncio.create_task(client.delete(f"/api/v1/runs/{run_id}"))
    await asyncio.sleep(0.05)
    gate.opened.set()

    assert (await delete).status_code == 204
    assert (await client.get(f"/api/v1/runs/{run_id}/results")).status_code == 404
    assert (await client.get(f"/api/v1/runs/{run_id}")).status_code == 404
    assert (await client.get(f"/api/v1/runs/{run_id}/equity.csv")).status_code == 404


async def test_a_second_server_on_the_database_leaves_the_first_servers_run_running(
    db_settings: Settings, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    async with app_client(db_settings) as first:
        run_id = (await first.post("/api/v1/run/backtest", json=released_run(SLOW_RUN, release))).json()["run_id"]
        await wait_for_status(first, "running")
        async with app_client(db_settings) as second:
            record = (await second.get(f"/api/v1/runs/{run_id}")).json()
            assert record["status"] == "running" and record["error"] is None
        release.touch()
        status = await _finished(first, run_id)
        assert status["status"] == "completed"
        assert (await first.get(f"/api/v1/runs/{run_id}")).json()["status"] == "completed"


async def test_runs_of_a_server_whose_lease_lapsed_become_interrupted(db_settings: Settings) -> None:
    async with app_client(db_settings):
        pass  # creates the schema
    engine = make_engine(db_settings.database_url)
    store = RunStore(engine)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        await store.register_server("a" * 32, host="elsewhere", pid=1, now=t0)
        await store.register_server("b" * 32, host="elsewhere", pid=2, now=t0)
        for server, run in (("a", "1"), ("b", "2")):
            await store.create(
                run_id=run * 32,
                mode="backtest",
                status="running",
                config={},
                strategy_name="SmaCross",
                symbols=["BTC/USDT"],
                timeframe="1h",
                exchange="synthetic",
                server_id=server * 32,
            )
        await store.heartbeat("b" * 32, now=t0 + timedelta(seconds=25))
        ttl = timedelta(seconds=30)

        # Server c starts at t0+20 s: both leases are fresh, nothing is interrupted.
        assert await store.mark_interrupted(now=t0 + timedelta(seconds=20), server_id="c" * 32, lease_ttl=ttl) == 0
        # At t0+40 s a's lease (last beat t0) lapsed; b beat at t0+25 s.
        assert await store.mark_interrupted(now=t0 + timedelta(seconds=40), server_id="c" * 32, lease_ttl=ttl) == 1
        a, b = await store.get("1" * 32), await store.get("2" * 32)
        assert a is not None and (a.status, a.error) == ("failed", INTERRUPTED_ERROR)
        assert b is not None and b.status == "running"
        # A server on this host whose process is gone is gone at once, lease or not.
        assert (
            await store.mark_interrupted(
                now=t0 + timedelta(seconds=41),
                server_id="c" * 32,
                lease_ttl=ttl,
                host="elsewhere",
                is_alive=lambda pid: pid != 2,
            )
            == 1
        )
    finally:
        await engine.dispose()


async def test_lease_heartbeat_keeps_a_long_run_from_being_interrupted(db_settings: Settings, tmp_path: Path) -> None:
    # Heartbeat every 50 ms with a 1 s lease: after 1.5 s only a renewed lease keeps the run alive.
    settings = with_test_strategies(db_settings).model_copy(
        update={"server_heartbeat_s": 0.05, "server_lease_ttl_s": 1.0}
    )
    engine = make_engine(settings.database_url)
    store = RunStore(engine)
    async with app_client(db_settings):
        pass  # creates the schema
    release = tmp_path / "release"
    first = RunRegistry(bus=EventBus(), store=store, settings=settings)
    other = RunRegistry(bus=EventBus(), store=store, settings=settings)
    try:
        await first.start()
        started = await first.slot(None).start_backtest(BacktestConfig(**released_run(SLOW_RUN, release)))
        for _ in range(1_000):
            if first.status()["status"] == "running":
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.5)  # longer than the lease
        await other.start()
        record = await store.get(started["run_id"])
        assert record is not None and record.status == "running"
        release.touch()
        for _ in range(3_000):
            if first.status()["status"] == "completed":
                break
            await asyncio.sleep(0.01)
        assert first.status()["status"] == "completed"
    finally:
        await first.close()
        await other.close()
        await engine.dispose()


@pytest.mark.parametrize(
    ("body", "total"),
    [
        # 50 symbols of 1m bars over 10 years: the 1.6 KB request that once grew the server to 6.9 GB.
        (
            {
                **YEAR_1H,
                "symbols": [f"C{i}/USDT" for i in range(50)],
                "timeframe": "1m",
                "start_date": "2014-01-01",
                "end_date": "2024-01-01",
            },
            50 * 5_258_880,
        ),
        # One symbol of 1s bars over 17 months (46 M bars).
        ({**YEAR_1H, "timeframe": "1s", "start_date": "2023-01-01", "end_date": "2024-06-01"}, 44_668_800),
    ],
)
async def test_a_run_over_the_size_limit_is_refused_before_it_starts(body: dict[str, Any], total: int) -> None:
    async with app_client() as client:
        response = await client.post("/api/v1/run/backtest", json=body)
        status = (await client.get("/api/v1/status")).json()
        runs = (await client.get("/api/v1/runs")).json()

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "RUN_TOO_LARGE"
    assert error["details"]["total_bars"] == total and error["details"]["max_total_bars"] == 20_000_000
    assert "CRACKTRADER_MAX_RUN_BARS" in error["message"] and f"{total:,}" in error["message"]
    assert status["status"] == "idle" and runs["total"] == 0


async def test_a_run_over_the_memory_limit_is_refused_with_the_estimate() -> None:
    settings = Settings(max_run_memory_mb=1)
    async with app_client(settings) as client:
        response = await client.post("/api/v1/run/backtest", json=YEAR_1H)

    assert response.status_code == 422
    details = response.json()["error"]["details"]
    # 8,784 bars x (100 B per bar-symbol + 80 B per bar).
    assert details["estimated_memory_mb"] == round(8_784 * 180 / 2**20, 1) and details["max_memory_mb"] == 1
    assert "CRACKTRADER_MAX_RUN_MEMORY_MB" in response.json()["error"]["message"]


async def test_retention_keeps_the_newest_runs_and_every_live_record(db_settings: Settings) -> None:
    async with app_client(db_settings):
        pass
    engine = make_engine(db_settings.database_url)
    store = RunStore(engine)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        ids = {}
        for i, (mode, status) in enumerate(
            [("backtest", "completed"), ("live", "stopped"), ("paper", "failed"), ("backtest", "running")]
            + [("backtest", "completed")] * 3
        ):
            run_id = f"{i:032x}"
            ids[i] = run_id
            await store.create(
                run_id=run_id,
                mode=mode,
                status=status,
                config={},
                strategy_name="SmaCross",
                symbols=["BTC/USDT"],
                timeframe="1h",
                exchange="synthetic",
                created_at=t0 + timedelta(days=i),
            )
        # By age: runs created before day 2 go, except the live record.
        assert await store.prune(now=t0 + timedelta(days=32), max_age=timedelta(days=30)) == 1
        # By count: the 2 newest finished non-live runs stay; the running run and the live record stay too.
        assert await store.prune(now=t0 + timedelta(days=32), max_count=2) == 2
        left = {r.id for r in (await store.list(limit=100))[0]}
        assert left == {ids[1], ids[3], ids[5], ids[6]}
    finally:
        await engine.dispose()


async def test_retention_setting_prunes_after_each_run() -> None:
    async with app_client(Settings(run_retention_count=1)) as client:
        for _ in range(3):
            run_id = (await client.post("/api/v1/run/backtest", json=SHORT)).json()["run_id"]
            await _finished(client, run_id)
            await client.delete("/api/v1/run/reset")
        runs = (await client.get("/api/v1/runs")).json()
    assert runs["total"] == 1 and runs["items"][0]["run_id"] == run_id
