"""Many runs at once: backtests in worker processes, a FIFO queue beyond the pool, runs addressed by id."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from cracktrader.settings import Settings, get_settings
from web_support import SLOW_RUN, YEAR_1H, LiveServer, app_client, released_run

pytestmark = pytest.mark.anyio

SHORT = {**YEAR_1H, "end_date": "2024-02-01T00:00:00Z"}  # 744 bars
FINISHED = ("completed", "failed", "stopped")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _run_status(c: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    r = await c.get(f"/api/v1/runs/{run_id}/status")
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _until(c: httpx.AsyncClient, run_id: str, done: Any, timeout: float = 120.0) -> dict[str, Any]:
    """Poll a run's status until `done(status)` (the timeout is a safety net, not a speed bound)."""
    deadline = time.monotonic() + timeout
    while not done(status := await _run_status(c, run_id)):
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.02)
    return status


async def _start(c: httpx.AsyncClient, body: dict[str, Any]) -> str:
    r = await c.post("/api/v1/runs", json={**body, "mode": "backtest"})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "starting"
    return str(r.json()["run_id"])


async def test_backtests_run_in_worker_processes_at_a_lower_priority(tmp_path: Path) -> None:
    release = tmp_path / "release"
    async with app_client() as c:
        run_id = await _start(c, released_run(SLOW_RUN, release))
        await _until(c, run_id, lambda s: s["phase"] == "simulating")
        pool = c.app.state.manager.pool  # type: ignore[attr-defined]
        pids = pool.pids()
        release.touch()
        final = await _until(c, run_id, lambda s: s["status"] in FINISHED)
    assert pids and os.getpid() not in pids
    expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + get_settings().backtest_niceness)
    assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in pids] == [expected] * len(pids)
    assert final["status"] == "completed" and final["bars_processed"] == final["bars_total"] == 8784


async def test_a_backtest_started_through_runs_leaves_the_slot_idle_and_is_addressed_by_id() -> None:
    async with app_client() as c:
        run_id = await _start(c, SHORT)
        slot = (await c.get("/api/v1/status")).json()
        final = await _until(c, run_id, lambda s: s["status"] in FINISHED)
        detailed = (await c.get(f"/api/v1/runs/{run_id}/status/detailed")).json()
        results = (await c.get(f"/api/v1/runs/{run_id}/results")).json()
        stop = await c.post(f"/api/v1/runs/{run_id}/stop")
        unknown = await c.get(f"/api/v1/runs/{'f' * 32}/status")
        in_slot = await c.post("/api/v1/run/backtest", json=SHORT)  # the slot was never taken
    assert slot["status"] == "idle" and slot["run_id"] is None
    assert final["status"] == "completed" and final["mode"] == "backtest" and final["bars_total"] == 744
    assert "condition" not in final  # a backtest's status has only the v1 fields
    assert detailed["run_id"] == run_id and 2 < len(detailed["equity_curve"]) <= 500 and "health" in detailed
    assert detailed["equity_curve"][-1]["value"] == pytest.approx(final["value"])
    assert results["run_id"] == run_id and results["status"] == "completed" and len(results["equity_curve"]) == 744
    assert results["final_value"] == pytest.approx(final["value"])
    assert stop.status_code == 409 and stop.json()["error"]["code"] == "NO_ACTIVE_RUN"
    assert unknown.status_code == 404
    assert in_slot.status_code == 200


async def test_stop_by_id_stops_a_simulating_backtest_within_a_second() -> None:
    async with app_client() as c:
        run_id = await _start(c, SLOW_RUN)
        await _until(c, run_id, lambda s: s["phase"] == "simulating" and s["bars_processed"] > 0)
        t0 = time.monotonic()
        stop = await c.post(f"/api/v1/runs/{run_id}/stop")
        elapsed = time.monotonic() - t0
        final = await _until(c, run_id, lambda s: s["phase"] is None)
        results = (await c.get(f"/api/v1/runs/{run_id}/results")).json()
    assert stop.status_code == 200 and stop.json()["status"] == "stopped" and elapsed < 1.0, (stop.text, elapsed)
    assert final["status"] == "stopped" and 0 < final["bars_processed"] < 8784
    assert results["status"] == "stopped" and len(results["equity_curve"]) >= final["bars_processed"]


async def test_backtests_over_the_pool_wait_in_order_and_a_queued_one_stops_at_once(tmp_path: Path) -> None:
    release = tmp_path / "release"
    settings = get_settings().model_copy(update={"max_concurrent_backtests": 1})
    with LiveServer(settings) as srv:
        async with httpx.AsyncClient(base_url=srv.base_url) as c:
            async with connect(f"{srv.ws_url}/api/v1/ws/status?run_id=*") as ws:
                await asyncio.wait_for(ws.recv(), 10)  # snapshot
                first = await _start(c, released_run(SLOW_RUN, release))
                second = await _start(c, SLOW_RUN)
                third = await _start(c, SHORT)
                await _until(c, first, lambda s: s["phase"] == "simulating")
                waiting = [await _run_status(c, r) for r in (second, third)]
                t0 = time.monotonic()
                stop = await c.post(f"/api/v1/runs/{second}/stop")
                elapsed = time.monotonic() - t0
                stopped = await _until(c, second, lambda s: s["phase"] is None)
                release.touch()
                updates: list[tuple[str, str, str | None]] = []
                while (third, "completed", None) not in updates:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    if message["type"] == "status_update":
                        p = message["payload"]
                        updates.append((p["run_id"], p["status"], (p["phase"] or "").split(" ")[0] or None))
            slot = (await c.get("/api/v1/status")).json()
    assert [(s["status"], s["phase"]) for s in waiting] == [("starting", "queued")] * 2
    assert stop.json()["status"] == "stopped" and elapsed < 1.0
    assert stopped["status"] == "stopped" and stopped["bars_processed"] == 0
    # The third started only once the first's simulation had ended (one worker; the server saves the results),
    # and the stopped one never ran.
    first_done = updates.index((first, "running", "saving"))
    assert updates.index((third, "running", "loading_data")) > first_done
    assert all(u[0] != third or u[1] == "starting" for u in updates[:first_done])
    assert not [u for u in updates if u[0] == second and u[1] == "running"]
    assert slot["status"] == "idle"


async def test_a_status_stream_by_run_id_follows_a_backtest_and_the_unfiltered_one_only_the_slot(
    tmp_path: Path,
) -> None:
    release = tmp_path / "release"
    with LiveServer() as srv:
        async with httpx.AsyncClient(base_url=srv.base_url) as c:
            by_id_run = await _start(c, released_run(SLOW_RUN, release))
            async with (
                connect(f"{srv.ws_url}/api/v1/ws/status?run_id={by_id_run}") as by_id,
                connect(f"{srv.ws_url}/api/v1/ws/status") as unfiltered,
            ):
                snapshot = json.loads(await asyncio.wait_for(by_id.recv(), 10))
                slot_snapshot = json.loads(await asyncio.wait_for(unfiltered.recv(), 10))
                release.touch()
                statuses: list[str] = []
                while not statuses or statuses[-1] not in FINISHED:
                    message = json.loads(await asyncio.wait_for(by_id.recv(), 60))
                    if message["type"] == "status_update":
                        assert message["payload"]["run_id"] == by_id_run
                        statuses.append(message["payload"]["status"])
                slot_run = (await c.post("/api/v1/run/backtest", json=SHORT)).json()["run_id"]
                while True:  # the slot's stream got nothing of the other run: its first update is the slot's
                    message = json.loads(await asyncio.wait_for(unfiltered.recv(), 30))
                    if message["type"] != "heartbeat":
                        break
    assert snapshot["type"] == "snapshot" and snapshot["payload"]["run_id"] == by_id_run
    assert slot_snapshot["payload"]["status"] == "idle"
    assert statuses[-1] == "completed"
    assert message["type"] == "status_update" and message["payload"]["run_id"] == slot_run


async def test_runs_of_another_user_are_not_found_by_id() -> None:
    from auth_support import auth_client, bearer

    async with auth_client() as c:
        alice = await bearer(c, "alice")
        bob = await bearer(c, "bob")
        r = await c.post("/api/v1/runs", json={**SHORT, "mode": "backtest"}, headers=alice)
        run_id = r.json()["run_id"]
        for path in (f"/api/v1/runs/{run_id}/status", f"/api/v1/runs/{run_id}/status/detailed"):
            assert (await c.get(path, headers=bob)).status_code == 404, path
        assert (await c.post(f"/api/v1/runs/{run_id}/stop", headers=bob)).status_code == 404
        final = await _until_with(c, run_id, alice)
    assert final["status"] == "completed"


async def _until_with(c: httpx.AsyncClient, run_id: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        status: dict[str, Any] = (await c.get(f"/api/v1/runs/{run_id}/status", headers=headers)).json()
        if status["status"] in FINISHED:
            return status
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.02)


def test_the_pool_size_defaults_to_the_number_of_cores() -> None:
    assert Settings().max_concurrent_backtests == (os.cpu_count() or 1)
    assert Settings(max_concurrent_backtests=3).max_concurrent_backtests == 3


def test_cli_runs_a_backtest_on_a_server_by_id_and_reads_its_status_and_results() -> None:
    from typer.testing import CliRunner

    from cracktrader.cli import app

    runner = CliRunner()
    args = ["--strategy", "TestStrategy", "--symbol", "BTC/USDT", "--exchange", "synthetic"]
    args += ["--start", SHORT["start_date"], "--end", SHORT["end_date"]]
    with LiveServer() as srv:
        done = runner.invoke(app, ["backtest", *args, "--server", srv.base_url, "--json"])
        assert done.exit_code == 0, done.output
        doc = json.loads(done.stdout)
        status = runner.invoke(app, ["runs", "status", doc["run_id"], "--server", srv.base_url])
        stop = runner.invoke(app, ["runs", "stop", doc["run_id"], "--server", srv.base_url])
        slot = httpx.get(f"{srv.base_url}/api/v1/status").json()
    assert doc["status"] == "completed" and len(doc["equity_curve"]) == 744
    assert status.exit_code == 0 and json.loads(status.stdout)["status"] == "completed"
    assert stop.exit_code == 1 and "NO_ACTIVE_RUN" in stop.output
    assert slot["status"] == "idle"


def test_sdk_starts_backtests_by_id_waits_for_them_and_stops_one(tmp_path: Path) -> None:
    from cracktrader.client import CrackTraderAPI

    with LiveServer() as srv, CrackTraderAPI(srv.base_url) as api:
        slow = api.start_run(SLOW_RUN).run_id
        short = api.start_run(SHORT, mode="backtest").run_id
        assert slow is not None and short is not None
        final = api.wait_for_run(short, timeout=120)
        detailed = api.run_detailed_status(short)
        stopped = api.stop_run(slow)
        slow_status = api.run_status(slow)
        results = api.get_run_results(short)
        slot = api.get_status()
    assert final.status == "completed" and final.bars_total == 744
    assert detailed.run_id == short and detailed.equity_curve
    assert stopped.status == "stopped" and slow_status.status == "stopped"
    assert results.run_id == short and results.final_value == pytest.approx(final.value)
    assert slot.status == "idle"


def _children(pid: int) -> list[int]:
    """Worker processes (spawned by multiprocessing) whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_workers_end_when_their_server_is_killed() -> None:
    import signal
    import subprocess
    import sys

    from support import free_loopback_port

    port = free_loopback_port()
    proc = subprocess.Popen(
        [sys.executable, "scripts/run_web_server.py", "--port", str(port), "--log-level", "warning"]
    )
    try:
        deadline = time.monotonic() + 60  # safety nets: each wait ends on what it waits for
        while not (workers := _children(proc.pid)) or len(workers) < get_settings().max_concurrent_backtests:
            assert time.monotonic() < deadline, "the server started no workers"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        while alive := [pid for pid in workers if Path(f"/proc/{pid}").exists()]:
            assert time.monotonic() < deadline + 30, f"orphaned workers {alive}"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()


CRASHING = '''
import os

from cracktrader.engine.context import Context
from cracktrader.engine.strategy import Strategy


class CrashStrategy(Strategy):
    """Kills the process it runs in at its 10th bar (a segfault in an extension would look the same)."""

    seen = 0

    def on_bar(self, ctx: Context) -> None:
        self.seen += 1
        if self.seen == 10:
            os._exit(3)
'''


async def test_a_worker_that_dies_fails_its_run_and_the_pool_runs_the_next_one(tmp_path: Path) -> None:
    (tmp_path / "crash.py").write_text(CRASHING)
    settings = get_settings().model_copy(update={"strategy_dir": tmp_path})
    async with app_client(settings) as c:
        crashed = await _start(c, {**SHORT, "strategy_name": "CrashStrategy"})
        failed = await _until(c, crashed, lambda s: s["status"] in FINISHED)
        after = await _start(c, SHORT)
        done = await _until(c, after, lambda s: s["status"] in FINISHED)
        health = (await c.get("/api/v1/health")).json()
    assert failed["status"] == "failed" and failed["error_code"] == "WORKER_DIED"
    assert done["status"] == "completed" and done["bars_processed"] == 744
    assert health["checks"]["executor"]["status"] == "ok"
