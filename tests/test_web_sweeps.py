"""Sweeps over HTTP on a real uvicorn: progress, paged and sorted rows, cancel, the size limit, owners, a row run
as a backtest, a sweep beside a running backtest, and rows that survive a restart (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from auth_support import auth_client, bearer
from cracktrader.settings import Settings, get_settings
from web_support import SLOW_RUN, TEST_STRATEGY_DIR, LiveServer, ServerProcess, released_run

pytestmark = pytest.mark.anyio

WEEKS = {
    "symbols": ["BTC/USDT"],
    "timeframe": "1h",
    "start_date": "2024-01-01T00:00:00Z",
    "end_date": "2024-03-01T00:00:00Z",
    "exchange": "synthetic",
}
# 3 x 2 combinations, of which (30, 20) and (30, 30) are rejected by the schema (fast must be below slow).
SMA_SWEEP: dict[str, Any] = {
    **WEEKS,
    "strategy_name": "SmaCross",
    "grid": {"fast": [5, 10, 30], "slow": {"start": 20, "end": 30, "step": 10}},
    "commission": 0.001,
}
# 40 combinations of at least 168 bars x 2 ms each: a sweep a test can cancel deep inside.
SLOW_SWEEP: dict[str, Any] = {
    **WEEKS,
    "end_date": "2024-01-08T00:00:00Z",
    "strategy_name": "SlowStrategy",
    "strategy_params": {"bar_ms": 2},
    "grid": {"trade_every": "0:39:1"},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings(**overrides: Any) -> Settings:
    return get_settings().model_copy(update={"max_concurrent_backtests": 2, **overrides})


@contextmanager
def served(s: Settings) -> Iterator[httpx.Client]:
    """A client of a real uvicorn serving the app with settings `s`."""
    with LiveServer(s) as server, httpx.Client(base_url=server.base_url, timeout=60) as c:
        yield c


def wait_sweep(c: httpx.Client, sweep_id: str, statuses: set[str], **kw: Any) -> dict[str, Any]:
    """Poll the sweep until it reaches one of `statuses` (the timeout is a safety net)."""
    deadline = time.monotonic() + 180
    while True:
        doc: dict[str, Any] = c.get(f"/api/v1/sweeps/{sweep_id}", **kw).json()
        if doc["status"] in statuses:
            return doc
        assert time.monotonic() < deadline, doc
        time.sleep(0.02)


def wait_run(c: httpx.Client, statuses: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    while True:
        status: dict[str, Any] = c.get("/api/v1/status").json()
        if status["status"] in statuses:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.02)


def run_sweep(c: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    r = c.post("/api/v1/sweeps", json=body)
    assert r.status_code == 202, r.text
    return wait_sweep(c, r.json()["sweep_id"], {"completed", "failed", "cancelled"})


def test_a_sweep_completes_with_progress_skipped_combinations_and_rows_paged_by_any_sort() -> None:
    with served(settings()) as c:
        accepted = c.post("/api/v1/sweeps", json=SMA_SWEEP)
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["status"] == "queued"
        doc = wait_sweep(c, accepted.json()["sweep_id"], {"completed", "failed", "cancelled"})
        sweep_id = doc["sweep_id"]
        best = c.get(f"/api/v1/sweeps/{sweep_id}/results").json()
        page = c.get(f"/api/v1/sweeps/{sweep_id}/results", params={"limit": 2, "offset": 1}).json()
        by_drawdown = c.get(f"/api/v1/sweeps/{sweep_id}/results", params={"sort": "max_drawdown"}).json()
        bad_sort = c.get(f"/api/v1/sweeps/{sweep_id}/results", params={"sort": "nope"})
        listed = c.get("/api/v1/sweeps").json()

    assert doc["status"] == "completed", doc
    assert doc["combinations"] == 6 and doc["skipped_count"] == 2 and doc["evaluated"] == 4 and doc["rows"] == 4
    assert doc["progress"] == {"done": 4, "total": 4, "fraction": 1.0, "eta_seconds": None}
    assert sorted((s["params"]["fast"], s["params"]["slow"]) for s in doc["skipped"]) == [(30, 20), (30, 30)]
    assert all(s["reason"] for s in doc["skipped"])
    assert best["total"] == 4 and [r["rank"] for r in best["items"]] == [1, 2, 3, 4]
    sharpe = [r["metrics"]["sharpe_ratio"] for r in best["items"]]
    assert sharpe == sorted(sharpe, reverse=True)
    assert {(r["params"]["fast"], r["params"]["slow"]) for r in best["items"]} == {(5, 20), (5, 30), (10, 20), (10, 30)}
    assert page["items"] == best["items"][1:3] and page["limit"] == 2 and page["offset"] == 1
    drawdowns = [r["metrics"]["max_drawdown"] for r in by_drawdown["items"]]
    assert drawdowns == sorted(drawdowns) and by_drawdown["sort"] == "max_drawdown"
    assert [r["rank"] for r in by_drawdown["items"]] == [1, 2, 3, 4]
    assert bad_sort.status_code == 422 and bad_sort.json()["error"]["code"] == "VALIDATION_ERROR"
    assert [s["sweep_id"] for s in listed["items"]] == [sweep_id] and listed["total"] == 1


def test_a_grid_over_the_limit_answers_422_with_the_limit_and_a_request_names_no_scheduler() -> None:
    with served(settings(max_sweep_combinations=10)) as c:
        big = c.post("/api/v1/sweeps", json={**SMA_SWEEP, "grid": {"fast": "1:4", "slow": "20:23"}})
        scheduler = c.post("/api/v1/sweeps", json={**SMA_SWEEP, "scheduler": "tcp://10.0.0.1:8786"})
        executor = c.post("/api/v1/sweeps", json={**SMA_SWEEP, "executor": "dask"})
        unknown_param = c.post("/api/v1/sweeps", json={**SMA_SWEEP, "grid": {"fsat": [5]}})
        bad_range = c.post("/api/v1/sweeps", json={**SMA_SWEEP, "grid": {"fast": "9:1:1"}})
        missing = c.get(f"/api/v1/sweeps/{'0' * 32}")
        listed = c.get("/api/v1/sweeps").json()

    assert big.status_code == 422
    assert big.json()["error"]["code"] == "SWEEP_TOO_LARGE"
    assert big.json()["error"]["details"] == {"combinations": 16, "max_combinations": 10}
    for r in (scheduler, executor):
        assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR", r.text
    assert unknown_param.status_code == 422 and unknown_param.json()["error"]["code"] == "INVALID_GRID"
    assert bad_range.status_code == 422 and bad_range.json()["error"]["code"] == "INVALID_GRID"
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    assert listed["total"] == 0


def test_cancelling_a_running_sweep_keeps_the_rows_evaluated_so_far() -> None:
    with served(settings()) as c:
        sweep_id = c.post("/api/v1/sweeps", json=SLOW_SWEEP).json()["sweep_id"]
        deadline = time.monotonic() + 180
        while c.get(f"/api/v1/sweeps/{sweep_id}").json()["progress"]["done"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        cancelled = c.delete(f"/api/v1/sweeps/{sweep_id}")
        doc = wait_sweep(c, sweep_id, {"completed", "failed", "cancelled"})
        rows = c.get(f"/api/v1/sweeps/{sweep_id}/results", params={"limit": 100}).json()
        again = c.delete(f"/api/v1/sweeps/{sweep_id}")

    assert cancelled.status_code == 200 and cancelled.json()["status"] in ("running", "cancelled")
    assert doc["status"] == "cancelled"
    assert 0 < doc["evaluated"] < 40 and doc["rows"] == doc["evaluated"]
    assert rows["total"] == doc["rows"] and len(rows["items"]) == doc["rows"]
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


def test_a_backtest_from_a_sweeps_row_has_the_rows_metrics() -> None:
    with served(settings()) as c:
        doc = run_sweep(c, SMA_SWEEP)
        rows = c.get(f"/api/v1/sweeps/{doc['sweep_id']}/results").json()["items"]
        started = c.post(f"/api/v1/sweeps/{doc['sweep_id']}/rows/2/backtest")
        status = wait_run(c, {"completed", "failed", "stopped"})
        results = c.get("/api/v1/results").json()
        no_row = c.post(f"/api/v1/sweeps/{doc['sweep_id']}/rows/99/backtest")

    assert started.status_code == 200, started.text
    assert status["status"] == "completed" and status["run_id"] == started.json()["run_id"]
    assert results["config"]["strategy_params"]["fast"] == rows[1]["params"]["fast"]
    assert results["config"]["strategy_params"]["slow"] == rows[1]["params"]["slow"]
    assert results["config"]["commission"] == 0.001
    metrics = results["performance_metrics"]
    for name, value in rows[1]["metrics"].items():
        assert metrics[name] == value, name
    assert no_row.status_code == 404 and no_row.json()["error"]["details"]["rows"] == 4


def test_a_sweep_runs_beside_a_running_backtest_and_both_complete(tmp_path: Path) -> None:
    release = tmp_path / "release"
    with served(settings()) as c:
        run = c.post("/api/v1/run/backtest", json=released_run(SLOW_RUN, release))
        assert run.status_code == 200, run.text
        wait_run(c, {"running"})
        doc = run_sweep(c, SMA_SWEEP)
        during = c.get("/api/v1/status").json()
        release.touch()
        status = wait_run(c, {"completed", "failed", "stopped"})

    assert doc["status"] == "completed" and doc["rows"] == 4
    assert during["status"] == "running" and during["run_id"] == run.json()["run_id"]
    assert status["status"] == "completed"


def test_a_sweep_counts_against_the_backtests_queue_limit() -> None:
    with served(settings(max_concurrent_backtests=1, max_queued_backtests=0)) as c:
        sweep_id = c.post("/api/v1/sweeps", json=SLOW_SWEEP).json()["sweep_id"]
        backtest = c.post("/api/v1/run/backtest", json=SLOW_RUN)
        second = c.post("/api/v1/sweeps", json=SMA_SWEEP)
        c.delete(f"/api/v1/sweeps/{sweep_id}")

    assert backtest.status_code == 409 and backtest.json()["error"]["code"] == "QUEUE_FULL"
    assert second.status_code == 409 and second.json()["error"]["code"] == "QUEUE_FULL"


async def test_another_users_sweep_is_not_found_with_auth_on() -> None:
    async with auth_client(settings()) as c:
        alice = await bearer(c, "alice")
        bob = await bearer(c, "bob")
        admin = await bearer(c, "root", role="admin")
        accepted = await c.post("/api/v1/sweeps", json=SMA_SWEEP, headers=alice)
        assert accepted.status_code == 202, accepted.text
        sweep_id = accepted.json()["sweep_id"]
        theirs = [
            await c.get(f"/api/v1/sweeps/{sweep_id}", headers=bob),
            await c.get(f"/api/v1/sweeps/{sweep_id}/results", headers=bob),
            await c.delete(f"/api/v1/sweeps/{sweep_id}", headers=bob),
            await c.post(f"/api/v1/sweeps/{sweep_id}/rows/1/backtest", headers=bob),
        ]
        bobs_list = (await c.get("/api/v1/sweeps", headers=bob)).json()
        alices_list = (await c.get("/api/v1/sweeps", headers=alice)).json()
        admin_sees = await c.get(f"/api/v1/sweeps/{sweep_id}", headers=admin)
        anonymous = await c.get("/api/v1/sweeps")

    assert [r.status_code for r in theirs] == [404, 404, 404, 404]
    assert bobs_list["total"] == 0 and alices_list["total"] == 1
    assert admin_sees.status_code == 200
    assert anonymous.status_code == 401


@pytest.mark.parametrize("db_settings", ["sqlite", "postgresql"], indirect=True)
def test_a_sweeps_rows_survive_a_restart(db_settings: Settings) -> None:
    with served(settings(database_url=db_settings.database_url)) as c:
        doc = run_sweep(c, SMA_SWEEP)
        before = c.get(f"/api/v1/sweeps/{doc['sweep_id']}/results").json()
    with served(settings(database_url=db_settings.database_url)) as c:
        after_doc = c.get(f"/api/v1/sweeps/{doc['sweep_id']}").json()
        after = c.get(f"/api/v1/sweeps/{doc['sweep_id']}/results").json()
        listed = c.get("/api/v1/sweeps").json()

    assert doc["status"] == "completed" and after_doc == doc
    assert after == before and after["total"] == 4
    assert [s["sweep_id"] for s in listed["items"]] == [doc["sweep_id"]]


def test_the_cli_backtests_a_sweeps_row_on_the_server_and_from_the_local_database() -> None:
    import json

    from typer.testing import CliRunner

    from cracktrader.cli import app

    runner = CliRunner()
    with LiveServer(settings()) as server, httpx.Client(base_url=server.base_url, timeout=60) as c:
        doc = run_sweep(c, SMA_SWEEP)
        best = c.get(f"/api/v1/sweeps/{doc['sweep_id']}/results").json()["items"][0]
        remote = runner.invoke(
            app, ["backtest", "--from-sweep", doc["sweep_id"], "--server", server.base_url, "--json"]
        )
        missing = runner.invoke(
            app, ["backtest", "--from-sweep", doc["sweep_id"], "--rank", "9", "--server", server.base_url]
        )
    local = runner.invoke(app, ["backtest", "--from-sweep", doc["sweep_id"], "--rank", "1", "--json"])
    unknown = runner.invoke(app, ["backtest", "--from-sweep", "f" * 32])
    neither = runner.invoke(app, ["backtest"])

    assert remote.exit_code == 0, remote.output
    for result in (remote, local):
        assert result.exit_code == 0, result.output
        metrics = json.loads(result.stdout.strip().splitlines()[-1])["performance_metrics"]
        assert {k: metrics[k] for k in best["metrics"]} == best["metrics"]
    assert missing.exit_code == 1 and "no row of rank 9" in missing.output
    assert unknown.exit_code != 0 and "No sweep with id" in unknown.output
    assert neither.exit_code == 2 and "--from-sweep" in neither.output


def test_the_python_sdk_runs_a_sweep_and_streams_its_progress() -> None:
    from cracktrader.client import CrackTraderAPI, SweepTooLargeError

    with LiveServer(settings(max_sweep_combinations=10)) as server, CrackTraderAPI(server.base_url) as api:
        with api.stream_status() as stream:
            assert stream.recv(timeout=30).type == "snapshot"
            started = api.start_sweep(SMA_SWEEP, top_k=3, sort="total_return")
            events = []
            while not events or events[-1].payload["status"] == "queued" or events[-1].payload["status"] == "running":
                event = stream.recv(timeout=120)
                if event.type == "sweep_progress":
                    events.append(event)
        done = api.wait_for_sweep(started.sweep_id, timeout=120)
        rows = api.sweep_results(started.sweep_id)
        listed = api.list_sweeps()
        with pytest.raises(SweepTooLargeError) as too_large:
            api.start_sweep(SMA_SWEEP, grid={"fast": "1:4", "slow": "20:23"})

    assert started.status == "queued" and done.status == "completed" and done.top_k == 3
    assert [r.rank for r in rows.items] == [1, 2, 3] and rows.sort == "total_return" and done.rows == 3
    returns = [r.metrics["total_return"] for r in rows.items]
    assert returns == sorted(returns, reverse=True)
    assert events[-1].payload == {
        "sweep_id": started.sweep_id,
        "status": "completed",
        "done": 4,
        "total": 4,
        "fraction": 1.0,
        "eta_seconds": None,
        "rows": 3,
    }
    assert listed.total == 1 and listed.items[0].sweep_id == started.sweep_id
    assert too_large.value.details == {"combinations": 16, "max_combinations": 10}


async def test_the_async_sdk_cancels_a_sweep_and_backtests_its_best_row() -> None:
    from cracktrader.client import AsyncCrackTraderAPI

    with LiveServer(settings()) as server:
        async with AsyncCrackTraderAPI(server.base_url) as api:
            slow = await api.start_sweep(SLOW_SWEEP)
            cancelled = await api.cancel_sweep(slow.sweep_id)
            ended = await api.wait_for_sweep(slow.sweep_id, timeout=120)
            sma = await api.wait_for_sweep((await api.start_sweep(SMA_SWEEP)).sweep_id, timeout=120)
            best = (await api.sweep_results(sma.sweep_id, limit=1)).items[0]
            run = await api.backtest_sweep_row(sma.sweep_id, 1)
            await api.wait_for_completion(run.run_id, timeout=120)
            results = await api.get_results()

    assert cancelled.status in ("queued", "running", "cancelled") and ended.status == "cancelled"
    assert ended.rows == ended.evaluated < 40
    assert {k: results.performance_metrics[k] for k in best.metrics} == best.metrics


@pytest.mark.parametrize("db_settings", ["sqlite", "postgresql"], indirect=True)
def test_a_sweep_cut_short_by_a_killed_server_is_failed_by_the_next_one(db_settings: Settings, tmp_path: Path) -> None:
    env = {"DATABASE_URL": db_settings.database_url, "CRACKTRADER_STRATEGY_DIR": str(TEST_STRATEGY_DIR)}
    first = ServerProcess(env, tmp_path / "first.log").start()
    try:
        with httpx.Client(base_url=first.base_url, timeout=60) as c:
            sweep_id = c.post("/api/v1/sweeps", json=SLOW_SWEEP).json()["sweep_id"]
            wait_sweep(c, sweep_id, {"running"})
    finally:
        first.kill()
    second = ServerProcess(env, tmp_path / "second.log").start()
    try:
        with httpx.Client(base_url=second.base_url, timeout=60) as c:
            doc = c.get(f"/api/v1/sweeps/{sweep_id}").json()
            fresh = run_sweep(c, SMA_SWEEP)
    finally:
        second.stop()

    assert doc["status"] == "failed" and doc["error_code"] == "INTERRUPTED" and doc["ended_at"] is not None
    assert fresh["status"] == "completed"
