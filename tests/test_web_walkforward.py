"""Walk-forward and CPCV over HTTP on a real uvicorn: reports equal to the in-process ones, cancel, 422s, owners,
the queue limit, reports that survive a restart, and the SDKs."""

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
from cracktrader.sweeps.walkforward_job import run_request
from cracktrader.sweeps.walkforward_request import WalkForwardRequest
from web_support import TEST_STRATEGY_DIR, LiveServer, ServerProcess, with_test_strategies

pytestmark = pytest.mark.anyio

WEEKS = {
    "symbols": ["BTC/USDT"],
    "timeframe": "1h",
    "start_date": "2024-01-01T00:00:00Z",
    "end_date": "2024-02-01T00:00:00Z",
    "exchange": "synthetic",
}
# 744 bars: train 240, test 120 make 4 windows; 4 combinations each (slow 20 and 30 with fast 5 and 10).
WALK: dict[str, Any] = {
    **WEEKS,
    "strategy_name": "SmaCross",
    "grid": {"fast": [5, 10], "slow": {"start": 20, "end": 30, "step": 10}},
    "commission": 0.001,
    "train": 240,
    "test": "5d",
    "purge": 2,
}
# 4 folds, 2 tested in each split: 6 splits and 3 paths.
CPCV: dict[str, Any] = {
    **{k: v for k, v in WALK.items() if k not in ("train", "test")},
    "cpcv": {"n_folds": 4, "n_test_folds": 2},
    "embargo": 3,
}
# 12 windows of 4 combinations over 48 bars at 5 ms a bar: about 1 s a window, so a cancel lands deep inside.
SLOW_WALK: dict[str, Any] = {
    **WEEKS,
    "end_date": "2024-01-15T00:00:00Z",
    "strategy_name": "SlowStrategy",
    "strategy_params": {"bar_ms": 5},
    "grid": {"trade_every": [0, 1, 2, 3]},
    "train": 48,
    "test": 24,
}
# One window whose sweep takes 8 x 600 bars x 5 ms = 24 s at least, one combination (3 s) a chunk: a cancel
# lands inside it.
DEEP_WALK: dict[str, Any] = {
    **SLOW_WALK,
    "end_date": "2024-01-31T00:00:00Z",
    "grid": {"trade_every": "0:7:1"},
    "train": 600,
    "test": 120,
}
ENDED = {"completed", "failed", "cancelled"}


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


def wait(c: httpx.Client, wf_id: str, statuses: set[str]) -> dict[str, Any]:
    """Poll the walk-forward until it reaches one of `statuses` (the timeout is a safety net)."""
    deadline = time.monotonic() + 180
    while True:
        doc: dict[str, Any] = c.get(f"/api/v1/walkforwards/{wf_id}").json()
        if doc["status"] in statuses:
            return doc
        assert time.monotonic() < deadline, doc
        time.sleep(0.02)


def in_process(body: dict[str, Any]) -> dict[str, Any]:
    """The report `walk_forward(...)` (or `cpcv(...)`) gives in this process for the same request."""
    report = run_request(WalkForwardRequest.model_validate(body), with_test_strategies(settings()))
    return report.model_dump(mode="json")


def test_a_walk_forward_completes_with_the_report_walk_forward_gives_in_process() -> None:
    with served(settings()) as c:
        accepted = c.post("/api/v1/walkforwards", json=WALK)
        assert accepted.status_code == 202, accepted.text
        doc = wait(c, accepted.json()["walkforward_id"], ENDED)
        listed = c.get("/api/v1/walkforwards").json()

    assert accepted.json()["status"] == "queued" and accepted.json()["kind"] == "walk_forward"
    assert accepted.json()["progress"] == {"done": 0, "total": 4, "fraction": 0.0, "eta_seconds": None}
    assert doc["status"] == "completed", doc
    assert doc["progress"] == {"done": 4, "total": 4, "fraction": 1.0, "eta_seconds": None}
    assert doc["combinations"] == 4
    report = doc["report"]
    assert report == in_process(WALK)
    assert [
        (w["train"]["start"], w["train"]["stop"], w["test"]["start"], w["test"]["stop"]) for w in report["windows"]
    ] == [
        (0, 240, 242, 362),
        (120, 360, 362, 482),
        (240, 480, 482, 602),
        (360, 600, 602, 722),
    ]
    assert len(report["stitched"]["equity"]) == 4 * 120
    assert all(w["params"]["fast"] in (5, 10) and w["params"]["slow"] in (20, 30) for w in report["windows"])
    assert listed["total"] == 1 and listed["items"][0]["walkforward_id"] == doc["walkforward_id"]
    assert listed["items"][0]["report"] is None and listed["limit"] == 50 and listed["offset"] == 0


def test_a_cpcv_completes_with_the_report_cpcv_gives_in_process() -> None:
    with served(settings()) as c:
        accepted = c.post("/api/v1/walkforwards", json=CPCV)
        assert accepted.status_code == 202, accepted.text
        doc = wait(c, accepted.json()["walkforward_id"], ENDED)

    assert doc["status"] == "completed" and doc["kind"] == "cpcv", doc
    assert doc["progress"]["done"] == doc["progress"]["total"] == 6
    assert doc["report"] == in_process(CPCV)
    assert len(doc["report"]["splits"]) == 6 and len(doc["report"]["paths"]) == 3
    assert doc["report"]["purge"] == 2 and doc["report"]["embargo"] == 3


def test_cancelling_a_running_walk_forward_ends_it_cancelled_without_a_report() -> None:
    with served(settings()) as c:
        wf_id = c.post("/api/v1/walkforwards", json=SLOW_WALK).json()["walkforward_id"]
        deadline = time.monotonic() + 180
        while c.get(f"/api/v1/walkforwards/{wf_id}").json()["progress"]["done"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        cancelled = c.delete(f"/api/v1/walkforwards/{wf_id}")
        doc = wait(c, wf_id, ENDED)
        again = c.delete(f"/api/v1/walkforwards/{wf_id}")

    assert cancelled.status_code == 200 and cancelled.json()["status"] in ("running", "cancelled")
    assert doc["status"] == "cancelled" and doc["report"] is None and doc["ended_at"] is not None
    assert 0 < doc["progress"]["done"] < doc["progress"]["total"] == 12
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


def test_a_cancel_lands_inside_a_windows_sweep_not_after_it() -> None:
    with served(settings()) as c:
        wf_id = c.post("/api/v1/walkforwards", json=DEEP_WALK).json()["walkforward_id"]
        wait(c, wf_id, {"running"})
        c.delete(f"/api/v1/walkforwards/{wf_id}")
        doc = wait(c, wf_id, ENDED)

    # No window done: it stopped inside the window's sweep (24 s at least), not after it.
    assert doc["status"] == "cancelled" and doc["report"] is None
    assert doc["progress"] == {"done": 0, "total": 1, "fraction": 0.0, "eta_seconds": None}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"train": "abc"}, "INVALID_WINDOWS"),
        ({"test": 0}, "INVALID_WINDOWS"),
        ({"train": "90m"}, "INVALID_WINDOWS"),  # not a whole number of 1h bars
        ({"train": 10_000}, "INVALID_WINDOWS"),  # longer than the range
        ({"step": 10}, "INVALID_WINDOWS"),  # shorter than the test window
        ({"train": None}, "VALIDATION_ERROR"),
        ({"embargo": 2}, "VALIDATION_ERROR"),  # cpcv only
        ({"cpcv": {"n_folds": 4, "n_test_folds": 2}}, "VALIDATION_ERROR"),  # with train and test
        ({"metric": "nope"}, "VALIDATION_ERROR"),
        ({"grid": {"fast": [50], "slow": [20]}}, "VALIDATION_ERROR"),  # every combination rejected
        ({"grid": {"fsat": [5]}}, "INVALID_GRID"),
        ({"executor": "dask"}, "VALIDATION_ERROR"),
    ],
)
def test_bad_walk_forward_requests_answer_422(change: dict[str, Any], code: str) -> None:
    with served(settings()) as c:
        r = c.post("/api/v1/walkforwards", json={**WALK, **change})
        listed = c.get("/api/v1/walkforwards").json()

    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code, r.text
    assert listed["total"] == 0


def test_bad_cpcv_folds_answer_422() -> None:
    with served(settings()) as c:
        too_many_tests = c.post("/api/v1/walkforwards", json={**CPCV, "cpcv": {"n_folds": 4, "n_test_folds": 4}})
        too_few_folds = c.post("/api/v1/walkforwards", json={**CPCV, "cpcv": {"n_folds": 2, "n_test_folds": 1}})
        with_train = c.post("/api/v1/walkforwards", json={**CPCV, "train": 100})
        big_purge = c.post("/api/v1/walkforwards", json={**CPCV, "purge": 500})

    assert [r.status_code for r in (too_many_tests, too_few_folds, with_train, big_purge)] == [422] * 4
    assert too_many_tests.json()["error"]["code"] == "INVALID_WINDOWS"
    assert too_few_folds.json()["error"]["code"] == "INVALID_WINDOWS"
    assert with_train.json()["error"]["code"] == "VALIDATION_ERROR"
    assert big_purge.json()["error"]["code"] == "INVALID_WINDOWS"


def test_a_grid_over_the_sweep_limit_answers_422_and_an_unknown_id_404() -> None:
    with served(settings(max_sweep_combinations=3)) as c:
        big = c.post("/api/v1/walkforwards", json=WALK)
        missing = c.get(f"/api/v1/walkforwards/{'0' * 32}")
        cancel_missing = c.delete(f"/api/v1/walkforwards/{'0' * 32}")

    assert big.status_code == 422 and big.json()["error"]["code"] == "SWEEP_TOO_LARGE"
    assert big.json()["error"]["details"] == {"combinations": 4, "max_combinations": 3}
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    assert cancel_missing.status_code == 404


def test_a_walk_forward_counts_against_the_backtests_queue_limit() -> None:
    with served(settings(max_concurrent_backtests=1, max_queued_backtests=0)) as c:
        wf_id = c.post("/api/v1/walkforwards", json=SLOW_WALK).json()["walkforward_id"]
        second = c.post("/api/v1/walkforwards", json=WALK)
        sweep = c.post("/api/v1/sweeps", json={k: v for k, v in WALK.items() if k not in ("train", "test", "purge")})
        c.delete(f"/api/v1/walkforwards/{wf_id}")

    assert second.status_code == 409 and second.json()["error"]["code"] == "QUEUE_FULL"
    assert sweep.status_code == 409 and sweep.json()["error"]["code"] == "QUEUE_FULL"


async def test_another_users_walk_forward_is_not_found_with_auth_on() -> None:
    async with auth_client(settings()) as c:
        alice = await bearer(c, "alice")
        bob = await bearer(c, "bob")
        admin = await bearer(c, "root", role="admin")
        accepted = await c.post("/api/v1/walkforwards", json=WALK, headers=alice)
        assert accepted.status_code == 202, accepted.text
        wf_id = accepted.json()["walkforward_id"]
        theirs = [
            await c.get(f"/api/v1/walkforwards/{wf_id}", headers=bob),
            await c.delete(f"/api/v1/walkforwards/{wf_id}", headers=bob),
        ]
        bobs_list = (await c.get("/api/v1/walkforwards", headers=bob)).json()
        alices_list = (await c.get("/api/v1/walkforwards", headers=alice)).json()
        admin_sees = await c.get(f"/api/v1/walkforwards/{wf_id}", headers=admin)
        anonymous = await c.get("/api/v1/walkforwards")

    assert [r.status_code for r in theirs] == [404, 404]
    assert bobs_list["total"] == 0 and alices_list["total"] == 1
    assert admin_sees.status_code == 200
    assert anonymous.status_code == 401


@pytest.mark.parametrize("db_settings", ["sqlite", "postgresql"], indirect=True)
def test_a_walk_forwards_report_survives_a_restart(db_settings: Settings) -> None:
    with served(settings(database_url=db_settings.database_url)) as c:
        wf_id = c.post("/api/v1/walkforwards", json=WALK).json()["walkforward_id"]
        doc = wait(c, wf_id, ENDED)
    with served(settings(database_url=db_settings.database_url)) as c:
        after = c.get(f"/api/v1/walkforwards/{wf_id}").json()
        listed = c.get("/api/v1/walkforwards").json()

    assert doc["status"] == "completed" and after == doc
    assert [w["walkforward_id"] for w in listed["items"]] == [wf_id]


def test_the_python_sdk_runs_a_walk_forward_and_streams_its_progress() -> None:
    from cracktrader.client import CrackTraderAPI, SweepTooLargeError, WalkForward

    with LiveServer(settings(max_sweep_combinations=10)) as server, CrackTraderAPI(server.base_url) as api:
        with api.stream_status() as stream:
            assert stream.recv(timeout=30).type == "snapshot"
            started = api.start_walkforward(WALK)
            events = []
            while not events or events[-1].payload["status"] in ("queued", "running"):
                event = stream.recv(timeout=120)
                if event.type == "walkforward_progress":
                    events.append(event)
        done = api.wait_for_walkforward(started.walkforward_id, timeout=120)
        listed = api.list_walkforwards()
        with pytest.raises(SweepTooLargeError):
            api.start_walkforward(WALK, grid={"fast": "1:4", "slow": "20:23"})

    assert isinstance(done, WalkForward) and started.status == "queued" and done.status == "completed"
    assert done.report is not None and done.report.model_dump(mode="json", exclude_unset=True) == in_process(WALK)
    assert [w.test.start for w in done.report.windows] == [242, 362, 482, 602]
    assert [e.payload["done"] for e in events if e.payload["status"] == "running"][-4:] == [1, 2, 3, 4]
    assert events[-1].payload == {
        "walkforward_id": started.walkforward_id,
        "kind": "walk_forward",
        "status": "completed",
        "done": 4,
        "total": 4,
        "fraction": 1.0,
        "eta_seconds": None,
    }
    assert listed.total == 1 and listed.items[0].walkforward_id == started.walkforward_id


async def test_the_async_sdk_runs_a_cpcv_and_cancels_a_walk_forward() -> None:
    from cracktrader.client import AsyncCrackTraderAPI

    with LiveServer(settings()) as server:
        async with AsyncCrackTraderAPI(server.base_url) as api:
            slow = await api.start_walkforward(SLOW_WALK)
            cancelled = await api.cancel_walkforward(slow.walkforward_id)
            ended = await api.wait_for_walkforward(slow.walkforward_id, timeout=120)
            cpcv = await api.wait_for_walkforward((await api.start_walkforward(CPCV)).walkforward_id, timeout=120)
            got = await api.get_walkforward(cpcv.walkforward_id)
            listed = await api.list_walkforwards(limit=1)

    assert cancelled.status in ("queued", "running", "cancelled") and ended.status == "cancelled"
    assert cpcv.status == "completed" and cpcv.kind == "cpcv" and got.report is not None
    assert got.report.model_dump(mode="json", exclude_unset=True) == in_process(CPCV)
    assert listed.total == 2 and len(listed.items) == 1 and listed.items[0].walkforward_id == cpcv.walkforward_id


# SQLite only: the interrupting UPDATE is the sweeps' (tested on both), and a server process costs ~20 s to start.
@pytest.mark.parametrize("db_settings", ["sqlite"], indirect=True)
def test_a_walk_forward_cut_short_by_a_killed_server_is_failed_by_the_next_one(
    db_settings: Settings, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": db_settings.database_url, "CRACKTRADER_STRATEGY_DIR": str(TEST_STRATEGY_DIR)}
    first = ServerProcess(env, tmp_path / "first.log").start()
    try:
        with httpx.Client(base_url=first.base_url, timeout=60) as c:
            wf_id = c.post("/api/v1/walkforwards", json=DEEP_WALK).json()["walkforward_id"]
            wait(c, wf_id, {"running"})
    finally:
        first.kill()
    second = ServerProcess(env, tmp_path / "second.log").start()
    try:
        with httpx.Client(base_url=second.base_url, timeout=60) as c:
            doc = c.get(f"/api/v1/walkforwards/{wf_id}").json()
    finally:
        second.stop()

    assert doc["status"] == "failed" and doc["error_code"] == "INTERRUPTED" and doc["ended_at"] is not None
    assert doc["report"] is None
