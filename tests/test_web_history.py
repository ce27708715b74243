"""Run history: persistence across restarts on SQLite and PostgreSQL, filters, deletion, CSV and large results."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest

from cracktrader.db.engine import make_engine
from cracktrader.db.run_store import RunStore
from cracktrader.settings import Settings
from web_support import SLOW_RUN, YEAR_1H, app_client, wait_for_status

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _run(c: object, body: dict) -> str:
    r = await c.post("/api/v1/run/backtest", json=body)  # type: ignore[attr-defined]
    assert r.status_code == 200, r.text
    await wait_for_status(c, {"completed", "failed", "stopped"})  # type: ignore[arg-type]
    await c.delete("/api/v1/run/reset")  # type: ignore[attr-defined]
    return str(r.json()["run_id"])


async def test_history_survives_a_restart(db_settings: Settings) -> None:
    async with app_client(db_settings) as c:
        run_id = await _run(c, YEAR_1H)
        final = (await c.get(f"/api/v1/runs/{run_id}")).json()["final_value"]
    async with app_client(db_settings) as c:
        listed = (await c.get("/api/v1/runs")).json()
        assert listed["total"] == 1 and listed["items"][0]["run_id"] == run_id
        record = listed["items"][0]
        assert record["status"] == "completed" and record["final_value"] == final
        assert record["symbols"] == ["BTC/USDT"] and record["strategy_name"] == "TestStrategy"
        assert record["created_at"] and record["ended_at"] and record["metrics"]["total_trades"] > 0
        results = (await c.get(f"/api/v1/runs/{run_id}/results")).json()
        assert results["final_value"] == final and results["page"]["equity_points_total"] == 8784
        assert (await c.get("/api/v1/results")).json()["run_id"] == run_id


async def test_a_run_interrupted_by_a_crash_shows_failed_interrupted_after_restart(db_settings: Settings) -> None:
    async with app_client(db_settings):
        pass  # creates the schema
    engine = make_engine(db_settings.database_url)
    store = RunStore(engine)
    await store.create(
        run_id="c" * 32,
        mode="backtest",
        status="running",
        config={"strategy_name": "SmaCross"},
        strategy_name="SmaCross",
        symbols=["BTC/USDT"],
        timeframe="1h",
        exchange="synthetic",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    await engine.dispose()
    async with app_client(db_settings) as c:
        record = (await c.get(f"/api/v1/runs/{'c' * 32}")).json()
        assert record["status"] == "failed" and record["error"] == "interrupted"
        assert (await c.get("/api/v1/status")).json()["status"] == "idle"


async def test_history_filters_and_paginates(db_settings: Settings) -> None:
    async with app_client(db_settings) as c:
        short = {**YEAR_1H, "end_date": "2024-02-01T00:00:00Z"}
        a = await _run(c, short)
        b = await _run(c, {**short, "strategy_name": "SmaCross", "symbols": ["ETH/USDT"]})
        d = await _run(c, {**short, "start_date": "2010-01-01", "end_date": "2010-02-01"})  # fails: no data
        everything = (await c.get("/api/v1/runs")).json()
        assert [i["run_id"] for i in everything["items"]] == [d, b, a]  # newest first
        assert [i["run_id"] for i in (await c.get("/api/v1/runs?status=failed")).json()["items"]] == [d]
        assert [i["run_id"] for i in (await c.get("/api/v1/runs?strategy=SmaCross")).json()["items"]] == [b]
        assert [i["run_id"] for i in (await c.get("/api/v1/runs?symbol=eth/usdt")).json()["items"]] == [b]
        assert (await c.get("/api/v1/runs?mode=live")).json()["total"] == 0
        page = (await c.get("/api/v1/runs?limit=1&offset=1")).json()
        assert page["total"] == 3 and [i["run_id"] for i in page["items"]] == [b]
        bad = await c.get("/api/v1/runs?status=bogus")
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_delete_removes_a_run_and_its_results() -> None:
    async with app_client() as c:
        run_id = await _run(c, {**YEAR_1H, "end_date": "2024-02-01T00:00:00Z"})
        assert (await c.delete(f"/api/v1/runs/{run_id}")).status_code == 204
        assert (await c.get(f"/api/v1/runs/{run_id}")).status_code == 404
        assert (await c.get(f"/api/v1/runs/{run_id}/results")).json()["error"]["code"] == "NOT_FOUND"
        assert (await c.delete(f"/api/v1/runs/{run_id}")).status_code == 404


async def test_the_active_run_cannot_be_deleted() -> None:
    async with app_client() as c:
        run_id = (await c.post("/api/v1/run/backtest", json=SLOW_RUN)).json()["run_id"]
        r = await c.delete(f"/api/v1/runs/{run_id}")
        await c.post("/api/v1/run/stop")
        assert r.status_code == 409 and r.json()["error"]["code"] == "RUN_NOT_RESETTABLE"


async def test_csv_downloads_hold_every_trade_and_bar() -> None:
    async with app_client() as c:
        run_id = await _run(c, YEAR_1H)
        results = (await c.get(f"/api/v1/runs/{run_id}/results?limit=50000")).json()
        trades = await c.get(f"/api/v1/runs/{run_id}/trades.csv")
        assert trades.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(trades.text)))
        assert len(rows) == len(results["trades"]) > 0
        assert float(rows[0]["price"]) == results["trades"][0]["price"]
        equity = list(csv.DictReader(io.StringIO((await c.get(f"/api/v1/runs/{run_id}/equity.csv")).text)))
        assert len(equity) == 8784 and equity[0]["timestamp"] == "2024-01-01T00:00:00Z"


async def test_large_results_stay_under_2_mb_by_default_and_keep_the_extremes() -> None:
    async with app_client() as c:
        big = {
            **YEAR_1H,
            "strategy_name": "SmaCross",
            "timeframe": "1m",
            "start_date": "2022-01-01",
            "end_date": "2024-01-01",
        }
        run_id = await _run(c, big)
        r = await c.get("/api/v1/results")
        assert r.status_code == 200 and len(r.content) < 2_000_000
        doc = r.json()
        assert doc["page"]["equity_points_total"] == 1_051_200 and doc["page"]["equity_points"] <= 2000
        assert doc["page"]["trades"]["total"] > 1000 and len(doc["trades"]) == 1000
        full = list(csv.DictReader(io.StringIO((await c.get(f"/api/v1/runs/{run_id}/equity.csv")).text)))
        values = [float(p["value"]) for p in full]
        shown = [p["value"] for p in doc["equity_curve"]]
        assert max(shown) == max(values) and min(shown) == min(values)
        assert doc["equity_curve"][0]["timestamp"] == full[0]["timestamp"]
        assert doc["equity_curve"][-1]["timestamp"] == full[-1]["timestamp"]
        second = (await c.get("/api/v1/results?limit=10&offset=1000&max_points=50")).json()
        assert len(second["equity_curve"]) <= 50 and [t["id"] for t in second["trades"]] == list(range(1001, 1011))


async def test_results_before_any_run_is_404_not_found() -> None:
    async with app_client() as c:
        r = await c.get("/api/v1/results")
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
        assert "POST /api/v1/run/backtest" in r.json()["error"]["message"]


async def test_results_config_is_the_request_with_secrets_redacted_in_the_database(db_settings: Settings) -> None:
    async with app_client(db_settings) as c:
        run_id = await _run(c, YEAR_1H)
        record = (await c.get(f"/api/v1/runs/{run_id}")).json()
        assert record["config"]["strategy_name"] == "TestStrategy"
        assert json.dumps(record["config"]).count("***") == 0  # nothing secret in a backtest request
