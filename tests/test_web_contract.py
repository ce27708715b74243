"""The v1 contract in process: lifecycle, status, results, errors, headers and deprecations."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from web_support import BUSY_RUN, SLOW_RUN, YEAR_1H, app_client, released_run, wait_for_status

pytestmark = pytest.mark.anyio

ENVELOPE_KEYS = {"error", "status_code", "path", "detail"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_backtest_completes_and_results_have_the_seed_fields() -> None:
    async with app_client() as c:
        started = await c.post("/api/v1/run/backtest", json=YEAR_1H)
        assert started.status_code == 200
        body = started.json()
        assert set(body) == {"run_id", "status", "message"} and body["status"] == "starting"
        status = await wait_for_status(c, {"completed", "failed"})
        assert status["status"] == "completed" and status["run_id"] == body["run_id"]
        assert status["progress"] == 1.0 and status["bars_processed"] == status["bars_total"] == 8784
        results = (await c.get("/api/v1/results")).json()
        assert {
            "run_id",
            "config",
            "status",
            "start_time",
            "end_time",
            "orders",
            "trades",
            "positions",
            "equity_curve",
            "performance_metrics",
            "final_value",
            "error",
        } <= set(results)
        assert results["run_id"] == body["run_id"] and results["status"] == "completed"
        assert results["final_value"] == pytest.approx(status["value"])
        assert results["performance_metrics"]["total_trades"] > 0
        assert status["trade_count"] == len(results["trades"]) == results["page"]["trades"]["total"]


async def test_a_completed_run_counts_its_trades_even_when_the_workers_last_messages_come_late(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under load the worker's orders and progress messages can arrive after its outcome: the results decide."""
    from cracktrader.runs import registry, worker

    monkeypatch.setattr(registry, "END_WAIT_S", 0.0)
    async with app_client() as c:
        pool = c.app.state.manager.pool  # type: ignore[attr-defined]
        submit = pool.submit

        def late_messages(job: Any, on_message: Any, on_done: Any) -> None:
            def dropping(kind: str, payload: dict[str, Any]) -> None:
                if kind not in (worker.ORDERS, worker.PROGRESS, worker.END):
                    on_message(kind, payload)

            submit(job, dropping, on_done)

        monkeypatch.setattr(pool, "submit", late_messages)
        await c.post("/api/v1/run/backtest", json=YEAR_1H)
        status = await wait_for_status(c, {"completed", "failed"})
        results = (await c.get("/api/v1/results")).json()
    assert status["status"] == "completed"
    assert status["trade_count"] == results["page"]["trades"]["total"] > 0
    assert status["bars_processed"] == status["bars_total"] == 8784


async def test_start_when_not_idle_returns_409_run_already_active() -> None:
    async with app_client() as c:
        await c.post("/api/v1/run/backtest", json=YEAR_1H)
        second = await c.post("/api/v1/run/backtest", json=YEAR_1H)
        assert second.status_code == 409
        assert second.json()["error"]["code"] == "RUN_ALREADY_ACTIVE"
        await wait_for_status(c, {"completed"})
        after = await c.post("/api/v1/run/backtest", json=YEAR_1H)
        assert after.status_code == 409 and "Current status: completed" in after.json()["error"]["message"]


async def test_stop_with_nothing_active_returns_409_no_active_run() -> None:
    async with app_client() as c:
        r = await c.post("/api/v1/run/stop")
        assert r.status_code == 409 and r.json()["error"]["code"] == "NO_ACTIVE_RUN"


async def test_reset_while_active_returns_409_then_reset_after_finish_returns_idle(tmp_path: Path) -> None:
    release = tmp_path / "release"
    async with app_client() as c:
        await c.post("/api/v1/run/backtest", json=released_run(SLOW_RUN, release))
        refused = await c.delete("/api/v1/run/reset")
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "RUN_NOT_RESETTABLE"
        release.touch()  # the rest of the run goes at full speed and completes
        finished = await wait_for_status(c, {"completed", "failed", "stopped"})
        assert finished["status"] == "completed" and finished["bars_processed"] == 8784
        reset = await c.delete("/api/v1/run/reset")
        assert reset.status_code == 200 and reset.json()["status"] == "idle"
        assert (await c.get("/api/v1/status")).json()["status"] == "idle"


async def test_stop_takes_effect_within_one_second_and_keeps_partial_results() -> None:
    async with app_client() as c:
        await c.post("/api/v1/run/backtest", json=SLOW_RUN)
        running = await wait_for_status(c, {"running"})
        while running["phase"] != "simulating" or running["bars_processed"] == 0:
            await asyncio.sleep(0.05)
            running = (await c.get("/api/v1/status")).json()
        t0 = time.monotonic()
        stopped = await c.post("/api/v1/run/stop")
        elapsed = time.monotonic() - t0
        assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
        assert elapsed < 1.0
        status = (await c.get("/api/v1/status")).json()
        assert status["status"] == "stopped" and 0 < status["bars_processed"] < status["bars_total"]
        while status["phase"] == "saving":  # the partial results are built and stored after the stop
            await asyncio.sleep(0.05)
            status = (await c.get("/api/v1/status")).json()
        results = (await c.get("/api/v1/results")).json()
        assert results["status"] == "stopped" and results["page"]["equity_points_total"] == status["bars_processed"]


async def test_status_answers_in_milliseconds_during_a_heavy_run() -> None:
    async with app_client() as c:
        await c.post("/api/v1/run/backtest", json=BUSY_RUN)
        await wait_for_status(c, {"running"})
        latencies = []
        for _ in range(30):
            t0 = time.perf_counter()
            r = await c.get("/api/v1/status")
            latencies.append(time.perf_counter() - t0)
            assert r.status_code == 200
            await asyncio.sleep(0.01)
        await c.post("/api/v1/run/stop")
        latencies.sort()
        assert latencies[len(latencies) // 2] < 0.05, latencies


async def test_status_reports_progress_cash_value_and_pnl_while_running() -> None:
    async with app_client() as c:
        await c.post("/api/v1/run/backtest", json=SLOW_RUN)
        for _ in range(200):
            s = (await c.get("/api/v1/status")).json()
            if s["bars_processed"] > 0:
                break
            await asyncio.sleep(0.02)
        await c.post("/api/v1/run/stop")
        assert 0 < s["progress"] < 1 and s["bars_total"] == 8784
        assert s["value"] is not None and s["pnl"] == pytest.approx(s["value"] - 10_000.0)


async def test_invalid_symbol_is_refused_with_supported_symbols() -> None:
    async with app_client() as c:
        r = await c.post("/api/v1/run/backtest", json={**YEAR_1H, "symbols": ["BTCUSD"]})
        body = r.json()
        assert r.status_code == 400 and body["error"]["code"] == "INVALID_SYMBOL"
        assert "BTC/USDT" in body["error"]["details"]["supported_symbols"]
        assert (await c.get("/api/v1/status")).json()["status"] == "idle"


@pytest.mark.parametrize(
    ("patch", "status", "code"),
    [
        ({"timeframe": "7m"}, 400, "INVALID_TIMEFRAME"),
        ({"strategy_name": "Nope"}, 400, "UNKNOWN_STRATEGY"),
        ({"strategy_params": {"period": -1}}, 422, "INVALID_STRATEGY_PARAMS"),
        ({"exchange": "nosuchexchange"}, 400, "UNKNOWN_EXCHANGE"),
        ({"start_date": "2025-01-01", "end_date": "2024-01-01"}, 400, "INVALID_DATE_RANGE"),
        ({"initial_cash": -5}, 422, "VALIDATION_ERROR"),
        ({"symbols": []}, 422, "VALIDATION_ERROR"),
    ],
)
async def test_bad_requests_get_the_error_envelope_with_the_right_code(patch: dict, status: int, code: str) -> None:
    async with app_client() as c:
        r = await c.post("/api/v1/run/backtest", json={**YEAR_1H, **patch})
        body = r.json()
        assert r.status_code == status, body
        assert set(body) == ENVELOPE_KEYS and body["error"]["code"] == code
        assert body["status_code"] == status and body["path"] == "/api/v1/run/backtest"
        assert body["detail"]


async def test_validation_error_keeps_fastapi_detail_list() -> None:
    async with app_client() as c:
        body = (await c.post("/api/v1/run/backtest", json={"symbols": ["BTC/USDT"]})).json()
        assert body["detail"][0]["loc"] == ["body", "strategy_name"]
        assert body["detail"][0]["type"] == "missing"


async def test_data_unavailable_run_fails_with_code_and_message() -> None:
    async with app_client() as c:
        await c.post("/api/v1/run/backtest", json={**YEAR_1H, "start_date": "2010-01-01", "end_date": "2010-02-01"})
        s = await wait_for_status(c, {"failed", "completed"})
        assert s["status"] == "failed" and s["error_code"] == "DATA_UNAVAILABLE"
        assert (await c.get("/api/v1/results")).json()["error"] == s["error"]


async def test_unknown_route_and_wrong_method_use_the_envelope_and_version_header() -> None:
    async with app_client() as c:
        missing = await c.get("/api/v1/nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
        assert missing.headers["x-cracktrader-api-version"] == "v1"
        wrong = await c.delete("/api/v1/status")
        assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
        assert wrong.headers["x-cracktrader-api-version"] == "v1"


async def test_unexpected_error_is_a_500_envelope_without_traceback_and_logged_with_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with app_client() as c:

        def boom() -> dict:
            raise RuntimeError("secret internals")

        c.app.state.manager.slot(None).status = boom  # type: ignore[attr-defined]
        with caplog.at_level(logging.ERROR, logger="cracktrader.web"):
            r = await c.get("/api/v1/status")
        body = r.json()
        assert r.status_code == 500 and body["error"]["code"] == "INTERNAL_ERROR"
        assert "secret internals" not in r.text and "Traceback" not in r.text
        request_id = r.headers["x-request-id"]
        assert body["error"]["details"]["request_id"] == request_id
        assert any(request_id in rec.getMessage() for rec in caplog.records)


async def test_every_response_has_version_and_security_headers() -> None:
    async with app_client() as c:
        for path in ("/api/v1/health", "/api/v1/status", "/api/v1/meta", "/health", "/ui", "/docs", "/nope"):
            r = await c.get(path)
            assert r.headers["x-cracktrader-api-version"] == "v1", path
            assert r.headers["x-content-type-options"] == "nosniff"
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
            assert r.headers["referrer-policy"] == "no-referrer"


async def test_meta_lists_deprecations_and_the_alias_route_carries_the_headers() -> None:
    async with app_client() as c:
        meta = (await c.get("/api/v1/meta")).json()
        assert meta["api_version"] == "v1" and meta["app_version"]
        (dep,) = meta["deprecations"]
        alias = await c.get(dep["path"])
        assert alias.status_code == 200 and alias.json()["status"] == "idle"
        assert alias.headers["deprecation"].startswith("@")
        assert alias.headers["sunset"] == "Mon, 01 Mar 2027 00:00:00 GMT"
        assert alias.headers["link"] == '</api/v1/status>; rel="successor-version"'
        assert "deprecation" not in (await c.get("/api/v1/status")).headers


LIVE_BODY = {
    "strategy_name": "TestStrategy",
    "strategy_params": {"period": 10, "slow": 30},
    "symbols": ["BTC/USDT"],
    "timeframe": "5m",
    "exchange": "synthetic",
    "exchange_config": {"apiKey": "AKIA-secret-key", "secret": "s3cr3t", "sandbox": True},
}


async def test_a_live_request_that_cannot_trade_is_validated_recorded_and_refused() -> None:
    async with app_client() as c:
        body = {**LIVE_BODY, "mode": "live"}
        r = await c.post("/api/v1/run/live", json=body)
        assert r.status_code == 422 and r.json()["error"]["code"] == "INVALID_LIVE_REQUEST"
        run_id = r.json()["error"]["details"]["run_id"]
        record = (await c.get(f"/api/v1/runs/{run_id}")).json()
        assert record["mode"] == "live" and record["status"] == "failed"
        assert record["config"]["exchange_config"] == {"sandbox": True}
        assert record["config"]["exchange_config_dropped_keys"] == 2
        assert (await c.get("/api/v1/status")).json()["status"] == "idle"
        bad = await c.post("/api/v1/run/live", json={**body, "strategy_name": "Nope"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "UNKNOWN_STRATEGY"


async def test_paper_request_starts_a_session_in_the_slot_that_status_stop_and_reset_address() -> None:
    async with app_client() as c:
        r = await c.post("/api/v1/run/live", json={**LIVE_BODY, "mode": "paper"})
        assert r.status_code == 200, r.text
        run_id = r.json()["run_id"]
        status = (await c.get("/api/v1/status")).json()
        again = await c.post("/api/v1/run/live", json={**LIVE_BODY, "mode": "paper"})
        backtest = await c.post("/api/v1/run/backtest", json=YEAR_1H)
        reset_while_running = await c.delete("/api/v1/run/reset")
        detailed = (await c.get("/api/v1/status/detailed")).json()
        by_id = (await c.get(f"/api/v1/runs/{run_id}/status")).json()
        stop = await c.post("/api/v1/run/stop", json={"flatten": True})
        stopped = (await c.get("/api/v1/status")).json()
        second_stop = await c.post("/api/v1/run/stop")
        results = (await c.get("/api/v1/results")).json()
        reset = (await c.delete("/api/v1/run/reset")).json()
        idle = (await c.get("/api/v1/status")).json()
        record = (await c.get(f"/api/v1/runs/{run_id}")).json()

    assert status["run_id"] == run_id and status["status"] == "running" and status["mode"] == "paper"
    assert status["condition"] == "ok" and status["reasons"] == []
    assert status["realized_pnl"] == status["unrealized_pnl"] == status["fees_paid"] == 0.0
    assert status["cash"] == status["value"] == 10_000.0 and status["positions"] == []
    for refused in (again, backtest):
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "RUN_ALREADY_ACTIVE"
    assert reset_while_running.status_code == 409
    assert reset_while_running.json()["error"]["code"] == "RUN_NOT_RESETTABLE"
    assert detailed["run_id"] == run_id and detailed["recent_trades"] == [] and "health" in detailed
    assert by_id["run_id"] == run_id and by_id["condition"] == "ok"
    assert stop.status_code == 200 and stop.json() == {
        "run_id": run_id,
        "status": "stopped",
        "message": "Session stopped",
    }
    assert stopped["status"] == "stopped" and stopped["run_id"] == run_id
    assert second_stop.status_code == 409 and second_stop.json()["error"]["code"] == "NO_ACTIVE_RUN"
    assert results["run_id"] == run_id and results["status"] == "stopped"
    assert reset["run_id"] == run_id and idle["status"] == "idle" and idle["run_id"] is None
    assert record["mode"] == "paper" and record["status"] == "stopped"
    assert record["config"]["exchange_config"] == {"sandbox": True}


async def test_detailed_status_adds_recent_activity_metrics_and_health() -> None:
    async with app_client() as c:
        await c.post("/api/v1/run/backtest", json=YEAR_1H)
        await wait_for_status(c, {"completed"})
        d = (await c.get("/api/v1/status/detailed")).json()
        assert {"recent_orders", "recent_trades", "positions", "equity_curve", "performance_metrics", "health"} <= set(
            d
        )
        assert 0 < len(d["recent_trades"]) <= 50 and d["performance_metrics"]["total_trades"] > 0
        assert d["health"]["status"] == "healthy"


async def test_health_reports_checks_metrics_and_versions() -> None:
    async with app_client() as c:
        for path in ("/api/v1/health", "/health"):
            h = (await c.get(path)).json()
            assert h["status"] == "healthy" and h["api_version"] == "v1" and h["version"]
            assert {"database", "data_store", "executor", "exchanges", "credentials"} == set(h["checks"])
            assert h["checks"]["database"]["status"] == "ok" and h["checks"]["exchanges"]["required"] is False
            assert {"uptime_seconds", "runs", "requests_total", "latency_ms"} <= set(h["metrics"])


async def test_health_is_unhealthy_503_when_the_database_is_gone() -> None:
    async with app_client() as c:
        await c.app.state.db_engine.dispose()  # type: ignore[attr-defined]

        async def broken() -> float:
            raise ConnectionError("db down")

        c.app.state.run_store.ping = broken  # type: ignore[attr-defined]
        r = await c.get("/api/v1/health")
        assert r.status_code == 503 and r.json()["status"] == "unhealthy"
        assert r.json()["checks"]["database"]["status"] == "fail"


async def test_strategies_and_exchanges_list_capabilities_for_forms() -> None:
    async with app_client() as c:
        strategies = (await c.get("/api/v1/strategies")).json()
        names = {s["name"]: s for s in strategies["items"]}
        assert names["SmaCross"]["parameters_schema"]["properties"]["slow"]["default"] == 30
        assert strategies["total"] == len(strategies["items"])
        exchanges = (await c.get("/api/v1/exchanges")).json()
        ids = {e["id"]: e for e in exchanges["items"]}
        assert ids["synthetic"]["ohlcv"] is True and ids["binance"]["sandbox"] is True
        assert "1h" in ids["binance"]["timeframes"]


async def test_exchanges_say_whether_live_trading_can_use_them_and_what_each_lacks() -> None:
    async with app_client() as c:
        exchanges = (await c.get("/api/v1/exchanges")).json()
    ids = {e["id"]: e["live_trading"] for e in exchanges["items"]}
    every = {"supported": True, "spot": True, "client_order_ids": True, "order_queries": True, "sandbox": True,
             "missing": []}  # fmt: skip
    assert ids["binance"] == ids["okx"] == every  # the two venues the suite trades on
    assert ids["kraken"] == {**every, "supported": False, "sandbox": False, "missing": ["sandbox"]}
    assert ids["bitstamp"]["missing"] == ["client_order_ids", "sandbox"]  # no known client-id field
    assert ids["synthetic"]["supported"] is False and ids["synthetic"]["missing"] == [
        "spot", "client_order_ids", "order_queries", "sandbox"
    ]  # fmt: skip
    assert all(set(v["missing"]) == {k for k in every if k not in ("supported", "missing") and not v[k]}
               for v in ids.values())  # fmt: skip


async def test_prometheus_metrics_count_requests() -> None:
    async with app_client() as c:
        await c.get("/api/v1/status")
        text = (await c.get("/metrics")).text
        assert 'cracktrader_http_requests_total{method="GET",route="/api/v1/status",status="200"} 1.0' in text


async def test_status_fast_path_answers_exactly_like_the_routed_endpoint() -> None:
    async with app_client() as c:
        fast = await c.get("/api/v1/status")
        routed = await c.get("/api/v1/status?via=router")  # a query string takes the full FastAPI stack
        assert fast.json() == routed.json() and fast.json()["status"] == "idle"
        for name in ("x-cracktrader-api-version", "content-security-policy", "x-content-type-options"):
            assert fast.headers[name] == routed.headers[name]
        assert fast.headers["x-request-id"] != routed.headers["x-request-id"]
