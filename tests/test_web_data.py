"""Stored candles, market search, candle sets, download jobs and the log tail, over a real server (offline)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from auth_support import PASSWORD, SECRET, auth_client, bearer
from cracktrader.auth import service as auth_service
from cracktrader.auth.store import AuthStore
from cracktrader.client import AsyncCrackTraderAPI, CrackTraderAPI, DownloadJob, EventStream
from cracktrader.data import service as data_service
from cracktrader.data.candles import Candles
from cracktrader.data.timeframes import parse_timeframe
from cracktrader.db.engine import make_engine
from cracktrader.runs import events
from cracktrader.settings import get_settings
from cracktrader.web.data.jobs import MAX_ACTIVE_JOBS, ProgressEvents
from cracktrader.web.data.jobs import DownloadJob as ServerJob
from web_support import LiveServer

HOUR = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
# Longer than any machine generates between a POST and the DELETE right after it (9 years of 1m bars).
BIG = {"exchange": "synthetic", "symbol": "BTC/USDT", "timeframe": "1m", "start": "2015-01-01", "end": "2024-01-01"}


@pytest.fixture
def server() -> Iterator[LiveServer]:
    with LiveServer(get_settings()) as srv:
        yield srv


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


def _import_with_gaps(tmp_path: Path) -> None:
    """48 hourly `csv` bars of ETH/USDT with 5 bars missing after bar 10 and 2 after bar 30."""
    keep = [k for k in range(55) if not 10 <= k < 15 and not 30 <= k < 32]
    ts = np.array([T0 + k * HOUR for k in keep], dtype=np.int64)
    price = 100.0 + np.arange(len(keep), dtype=np.float64)
    candles = Candles.from_columns(ts, price, price + 1, price - 1, price + 0.5, np.full(len(keep), 7.0))
    data_service.open_store(get_settings()).write("csv", "ETH/USDT", "1h", candles)


def _wait(http: httpx.Client, job_id: str, statuses: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 300  # a safety net, not a speed bound
    while time.monotonic() < deadline:
        job: dict[str, Any] = http.get(f"/api/v1/data/downloads/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {statuses}")


def test_stored_candles_come_from_the_store_and_are_paged_by_limit(http: httpx.Client, tmp_path: Path) -> None:
    _import_with_gaps(tmp_path)
    params = {"exchange": "csv", "symbol": "eth/usdt", "timeframe": "1h", "limit": 20}
    first = http.get("/api/v1/candles", params=params).json()
    assert first["symbol"] == "ETH/USDT" and first["count"] == 20 and first["truncated"] is True
    assert first["candles"]["timestamp"][:3] == [T0, T0 + HOUR, T0 + 2 * HOUR]
    assert first["candles"]["open"][0] == 100.0 and first["candles"]["volume"][0] == 7.0
    rest = http.get("/api/v1/candles", params={**params, "start": first["next_start"], "limit": 1000}).json()
    assert rest["truncated"] is False and rest["next_start"] is None
    assert first["count"] + rest["count"] == 48
    ranged = http.get("/api/v1/candles", params={**params, "start": "2024-01-01T05:00:00Z", "end": T0 + 8 * HOUR})
    assert ranged.json()["candles"]["timestamp"] == [T0 + k * HOUR for k in (5, 6, 7)]


def test_synthetic_candles_are_generated_and_bounded(http: httpx.Client) -> None:
    params = {"exchange": "synthetic", "symbol": "BTC/USDT", "timeframe": "1d", "start": "2020-01-01", "limit": 10}
    doc = http.get("/api/v1/candles", params=params).json()
    assert doc["count"] == 10 and doc["truncated"] is True
    assert doc["next_start"] == doc["candles"]["timestamp"][-1] + 86_400_000
    again = http.get("/api/v1/candles", params=params).json()
    assert again == doc  # deterministic


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"exchange": "csv", "symbol": "NOPE/USDT"}, 404, "DATA_UNAVAILABLE"),
        ({"exchange": "synthetic", "symbol": "BTC/USDT", "timeframe": "7x"}, 422, "INVALID_TIMEFRAME"),
        ({"exchange": "synthetic", "symbol": "BTC/USDT", "limit": 10**7}, 422, "VALIDATION_ERROR"),
        ({"exchange": "synthetic", "symbol": "BTC/USDT", "limit": "inf"}, 422, "VALIDATION_ERROR"),
        ({"exchange": "synthetic", "symbol": "BTC/USDT", "start": "yesterday"}, 422, "INVALID_DATE_RANGE"),
        ({"exchange": "synthetic", "symbol": "BTC/USDT", "start": "2024-02-01", "end": "2024-01-01"}, 422,
         "INVALID_DATE_RANGE"),
        ({"exchange": "synthetic", "symbol": "not a symbol"}, 400, "INVALID_SYMBOL"),
        ({"exchange": "synthetic"}, 422, "VALIDATION_ERROR"),
    ],
)  # fmt: skip
def test_bad_candle_queries_get_clear_errors(
    http: httpx.Client, params: dict[str, Any], status: int, code: str
) -> None:
    r = http.get("/api/v1/candles", params=params)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_market_search_is_a_case_insensitive_substring(http: httpx.Client) -> None:
    doc = http.get("/api/v1/exchanges/synthetic/markets", params={"q": "btc"}).json()
    assert doc["any_symbol"] is True and doc["exchange"] == "synthetic"
    assert [m["symbol"] for m in doc["items"]] == ["BTC/EUR", "BTC/USDT", "ETH/BTC"]
    assert doc["items"][1] == {"symbol": "BTC/USDT", "base": "BTC", "quote": "USDT"}
    assert http.get("/api/v1/exchanges/SYNTHETIC/markets", params={"limit": 2}).json()["total"] == 8
    assert len(http.get("/api/v1/exchanges/synthetic/markets", params={"limit": 2}).json()["items"]) == 2
    unknown = http.get("/api/v1/exchanges/nosuchexchange/markets")
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "UNKNOWN_EXCHANGE"
    assert http.get("/api/v1/exchanges/synthetic/markets", params={"limit": 0}).status_code == 422


def test_candle_sets_list_ranges_and_the_largest_gaps(http: httpx.Client, tmp_path: Path) -> None:
    assert http.get("/api/v1/data/sets").json() == {"items": [], "total": 0, "limit": 200, "offset": 0}
    _import_with_gaps(tmp_path)
    [item] = http.get("/api/v1/data/sets").json()["items"]
    assert item["exchange"] == "csv" and item["symbol"] == "ETH/USDT" and item["timeframe"] == "1h"
    assert item["first"] == "2024-01-01T00:00:00Z" and item["last"] == "2024-01-03T06:00:00Z"
    assert item["count"] == 48 and item["gaps"] == 2 and item["missing_bars"] == 7 and item["size_bytes"] > 0
    assert item["largest_gaps"] == [
        {"start": "2024-01-01T10:00:00Z", "end": "2024-01-01T15:00:00Z", "missing_bars": 5},
        {"start": "2024-01-02T06:00:00Z", "end": "2024-01-02T08:00:00Z", "missing_bars": 2},
    ]
    assert "path" not in item  # the server's file layout is its own business


def test_a_download_job_fills_the_store_with_progress(http: httpx.Client) -> None:
    body = {
        "exchange": "synthetic",
        "symbol": "btc/usdt",
        "timeframe": "1h",
        "start": "2024-01-01",
        "end": "2024-02-01",
    }
    r = http.post("/api/v1/data/downloads", json=body)
    assert r.status_code == 202, r.text
    job = _wait(http, r.json()["id"], {"completed", "failed", "canceled"})
    assert job["status"] == "completed", job
    assert job["progress"] == {"done": 744, "total": 744, "fraction": 1.0, "eta_s": 0.0}
    assert job["dataset"]["count"] == 744 and job["dataset"]["symbol"] == "BTC/USDT" and job["finished_at"]
    [stored] = http.get("/api/v1/data/sets").json()["items"]
    assert stored == job["dataset"]


def _download_events(stream: EventStream, job_id: str) -> list[DownloadJob]:
    """The job's `download_progress` events from the stream, up to and including its last."""
    seen: list[DownloadJob] = []
    while not seen or not seen[-1].finished:
        job = stream.recv(timeout=120).download()
        if job is not None:
            assert job.id == job_id, job  # no other job runs
            seen.append(job)
    return seen


# 2023-07-01 .. 2024-01-01 in 1m bars: 264,960 bars, fetched in three chunks of at most 100,000.
HALF_YEAR = {"timeframe": "1m", "start": "2023-07-01", "end": "2024-01-01"}


def test_a_download_job_streams_its_progress_in_order_to_its_last_status(server: LiveServer) -> None:
    server.app.state.downloads.throttle_s = 0.0  # every progress report becomes an event
    with CrackTraderAPI(server.base_url) as api, api.stream_status() as stream:
        assert stream.recv(timeout=30).type == "snapshot"
        started = api.start_download("synthetic", "BTC/USDT", **HALF_YEAR)
        seen = _download_events(stream, started.id)
    first, last = seen[0], seen[-1]
    assert first.status == "running" and first.progress.done == 0 and first.progress.total == 264_960
    assert [j.status for j in seen[:-1]] == ["running"] * (len(seen) - 1)
    done = [j.progress.done for j in seen]
    assert done == sorted(done) and len(set(done)) >= 4  # 0 and each of the three chunks
    assert {100_000, 200_000} <= set(done)
    assert last.status == "completed" and last.progress.done == last.progress.total == 264_960
    assert last.progress.fraction == 1.0 and last.progress.eta_s == 0.0
    assert last.dataset is not None and last.dataset.count == 264_960 and last.symbol == "BTC/USDT"


def test_a_canceled_download_s_last_event_says_canceled(server: LiveServer) -> None:
    with CrackTraderAPI(server.base_url) as api, api.stream_status() as stream:
        assert stream.recv(timeout=30).type == "snapshot"
        started = api.start_download("synthetic", "BTC/USDT", timeframe="1m", start=BIG["start"], end=BIG["end"])
        api.cancel_download(started.id)
        seen = _download_events(stream, started.id)
    assert seen[-1].status == "canceled" and seen[-1].finished_at is not None and seen[-1].dataset is None
    assert seen[-1].progress.done < seen[-1].progress.total


def test_progress_events_are_throttled_but_the_first_and_last_always_go_out() -> None:
    async def publish() -> list[dict[str, Any]]:
        bus = events.EventBus()
        bus.bind(asyncio.get_running_loop())
        sub = bus.subscribe()
        now = [0.0]
        report = ProgressEvents(bus, 0.25, clock=lambda: now[0])
        job = ServerJob("j1", None, "synthetic", "BTC/USDT", parse_timeframe("1m"), T0, T0 + 1000 * 60_000, "now")
        job.status = "running"
        report(job, force=True)  # started
        for k, t in enumerate((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.9)):
            now[0] = t
            job.done, job.total = 100 * (k + 1), 1000
            report(job)
        job.status = "completed"
        report(job, force=True)  # ended, 0 s after the last one
        return [e.payload for e in [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]]

    got = asyncio.run(publish())
    # Sent at t=0 (first), 0.3, 0.6, 0.9 (each >= 0.25 s after the one before) and the last.
    assert [(p["status"], p["progress"]["done"]) for p in got] == [
        ("running", 0), ("running", 300), ("running", 600), ("running", 700), ("completed", 1000),
    ]  # fmt: skip
    assert got[0]["id"] == "j1" and got[-1]["progress"]["fraction"] == 1.0


async def _create_user(username: str) -> None:
    store = AuthStore(make_engine(get_settings().database_url))
    try:
        await auth_service.create_user(store=store, username=username, password=PASSWORD)
    finally:
        await store._engine.dispose()


def test_with_auth_on_download_events_go_only_to_the_job_s_user() -> None:
    small = {"timeframe": "1d", "start": "2024-01-01", "end": "2024-02-01"}
    with LiveServer(auth_mode="on", jwt_secret_key=SECRET, rate_limit_per_minute=100_000) as srv:
        for name in ("ana", "ben"):
            asyncio.run(_create_user(name))
        with CrackTraderAPI(srv.base_url) as ana, CrackTraderAPI(srv.base_url) as ben:
            ana.login("ana", PASSWORD)
            ben.login("ben", PASSWORD)
            with ana.stream_status() as ana_stream, ben.stream_status() as ben_stream:
                assert ana_stream.recv(timeout=30).type == "snapshot"
                assert ben_stream.recv(timeout=30).type == "snapshot"
                anas = ana.start_download("synthetic", "BTC/USDT", **small)
                ana_seen = _download_events(ana_stream, anas.id)
                # Ben's own job is published after Ana's ended: had he been sent hers, they would come first.
                bens = ben.start_download("synthetic", "ETH/USDT", **small)
                ben_seen = _download_events(ben_stream, bens.id)
    assert ana_seen[-1].status == "completed" and ana_seen[-1].progress.done == 31
    assert ben_seen[-1].status == "completed" and {j.id for j in ben_seen} == {bens.id}


def test_a_download_job_can_be_canceled(http: httpx.Client) -> None:
    job = http.post("/api/v1/data/downloads", json=BIG).json()
    canceled = http.delete(f"/api/v1/data/downloads/{job['id']}")
    assert canceled.status_code == 200
    done = _wait(http, job["id"], {"completed", "failed", "canceled"})
    assert done["status"] == "canceled" and done["progress"]["done"] < done["progress"]["total"]
    assert done["dataset"] is None and done["finished_at"]


def test_download_jobs_are_bounded(http: httpx.Client) -> None:
    jobs = [http.post("/api/v1/data/downloads", json=BIG).json()["id"] for _ in range(MAX_ACTIVE_JOBS)]
    try:
        over = http.post("/api/v1/data/downloads", json=BIG)
        assert over.status_code == 409 and over.json()["error"]["code"] == "TOO_MANY_DOWNLOADS"
        assert sorted(over.json()["error"]["details"]["active"]) == sorted(jobs)
    finally:
        for job_id in jobs:
            http.delete(f"/api/v1/data/downloads/{job_id}")
    for job_id in jobs:
        assert _wait(http, job_id, {"completed", "failed", "canceled"})["status"] == "canceled"
    # The slots are free again.
    small = {**BIG, "timeframe": "1d", "start": "2024-01-01", "end": "2024-01-05"}
    again = http.post("/api/v1/data/downloads", json=small)
    assert again.status_code == 202
    assert _wait(http, again.json()["id"], {"completed", "failed"})["status"] == "completed"


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"start": "2000-01-01", "end": "2024-01-01"}, 422, "DOWNLOAD_TOO_LARGE"),
        ({"timeframe": "2y"}, 422, "INVALID_TIMEFRAME"),
        ({"exchange": "nosuchexchange"}, 400, "UNKNOWN_EXCHANGE"),
        ({"start": "2024-02-01", "end": "2024-01-01"}, 422, "INVALID_DATE_RANGE"),
        ({"start": "NaN"}, 422, "INVALID_DATE_RANGE"),
        ({"extra": 1}, 422, "VALIDATION_ERROR"),
        ({"symbol": ""}, 422, "VALIDATION_ERROR"),
    ],
)
def test_bad_download_requests_get_clear_errors(
    http: httpx.Client, change: dict[str, Any], status: int, code: str
) -> None:
    r = http.post("/api/v1/data/downloads", json={**BIG, **change})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_a_download_of_a_bad_symbol_fails_with_its_code(http: httpx.Client) -> None:
    body = {**BIG, "symbol": "NOTASYMBOL", "timeframe": "1d", "start": "2024-01-01", "end": "2024-01-05"}
    job = http.post("/api/v1/data/downloads", json=body).json()
    done = _wait(http, job["id"], {"completed", "failed", "canceled"})
    assert done["status"] == "failed" and done["error"]["code"] == "INVALID_SYMBOL"


def test_unknown_download_jobs_are_404(http: httpx.Client) -> None:
    for method in ("GET", "DELETE"):
        r = http.request(method, "/api/v1/data/downloads/nope")
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"


def test_the_log_tail_is_redacted_and_filtered(http: httpx.Client) -> None:
    log = logging.getLogger("cracktrader.test_logs")
    log.setLevel(logging.INFO)
    log.warning("fetching https://bob:hunter2@example.test/x?apiKey=%s&limit=5", "s3cr3t-value")
    log.info("about a run", extra={"run_id": "run-42"})
    log.error("Run %s failed", "ab" * 16)
    log.debug("below the logger's level: never recorded")
    doc = http.get("/api/v1/logs", params={"level": "WARNING"}).json()
    mine = [item for item in doc["items"] if item["logger"] == "cracktrader.test_logs"]
    assert [i["level"] for i in mine] == ["WARNING", "ERROR"]
    line = mine[0]
    assert line["level"] == "WARNING" and line["time"].endswith("Z")
    assert "s3cr3t-value" not in line["message"] and "hunter2" not in line["message"]
    assert line["message"].startswith("fetching https://") and "example.test/x" in line["message"]
    by_run = http.get("/api/v1/logs", params={"run_id": "run-42", "level": "DEBUG"}).json()["items"]
    assert [(i["message"], i["run_id"]) for i in by_run] == [("about a run", "run-42")]
    [failed] = http.get("/api/v1/logs", params={"run_id": "ab" * 16}).json()["items"]
    assert failed["message"] == f"Run {'ab' * 16} failed" and failed["level"] == "ERROR"
    assert http.get("/api/v1/logs", params={"limit": 1}).json()["total"] == 1
    for bad in ({"level": "LOUD"}, {"limit": 10**6}, {"limit": 0}):
        r = http.get("/api/v1/logs", params=bad)
        assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"


async def _logs_with_auth() -> None:
    async with auth_client() as c:
        trader = await bearer(c, "trader1")
        admin = await bearer(c, "root", role="admin")
        denied = await c.get("/api/v1/logs", headers=trader)
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "FORBIDDEN"
        assert (await c.get("/api/v1/logs", headers=admin)).status_code == 200
        assert (await c.get("/api/v1/logs")).status_code == 401
        # A job is its owner's: another user does not see it, an admin does.
        body = {**BIG, "timeframe": "1d", "start": "2024-01-01", "end": "2024-01-05"}
        job = (await c.post("/api/v1/data/downloads", json=body, headers=trader)).json()
        other = await bearer(c, "trader2")
        assert (await c.get(f"/api/v1/data/downloads/{job['id']}", headers=other)).status_code == 404
        assert (await c.get(f"/api/v1/data/downloads/{job['id']}", headers=admin)).status_code == 200


def test_with_auth_on_logs_are_for_admins_and_jobs_for_their_owner() -> None:
    asyncio.run(_logs_with_auth())


def test_the_sdks_cover_data_and_logs(server: LiveServer, tmp_path: Path) -> None:
    _import_with_gaps(tmp_path)
    with CrackTraderAPI(server.base_url) as api:
        assert api.get_candles("ETH/USDT", exchange="csv", limit=5).count == 5
        assert api.get_markets("synthetic", q="eth").items[0].symbol == "ETH/BTC"
        assert api.list_candle_sets().items[0].largest_gaps[0].missing_bars == 5
        job = api.start_download("synthetic", "SOL/USDT", timeframe="1d", start="2024-01-01", end="2024-02-01")
        while not job.finished:
            time.sleep(0.02)
            job = api.get_download(job.id)
        assert job.status == "completed" and job.progress.done == 31
        assert api.cancel_download(job.id).status == "completed"  # a finished job stays as it ended
        assert isinstance(api.get_logs(level="DEBUG").items, list)

    async def read() -> None:
        async with AsyncCrackTraderAPI(server.base_url) as api:
            assert (await api.get_candles("ETH/USDT", exchange="csv")).count == 48
            assert (await api.get_markets("synthetic")).any_symbol is True
            assert (await api.list_candle_sets()).total == 2
            job = await api.start_download("synthetic", "BTC/USDT", timeframe="1d", start="2024-01-01")
            job = await api.cancel_download(job.id)
            assert job.id and (await api.get_download(job.id)).id == job.id
            assert (await api.get_logs(limit=1)).capacity == 2000

    asyncio.run(read())


def test_a_ccxt_exchange_is_searched_and_downloaded_through_the_cli_s_code(fake_binance: Any) -> None:
    with LiveServer(get_settings()) as server, httpx.Client(base_url=server.base_url, timeout=60) as http:
        found = http.get("/api/v1/exchanges/binance/markets", params={"q": "Usdt"}).json()
        assert found["any_symbol"] is False
        assert [m["symbol"] for m in found["items"]] == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
        body = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m", "start": "2024-05-01",
                "end": "2024-05-03"}  # fmt: skip
        job = _wait(http, http.post("/api/v1/data/downloads", json=body).json()["id"], {"completed", "failed"})
        assert job["status"] == "completed", job
        assert job["progress"]["done"] == job["progress"]["total"] == 2880
        assert job["dataset"]["count"] == 2880 and job["dataset"]["gaps"] == 0
        assert len(fake_binance.requests_to("/api/v3/klines")) == 3  # 1000 + 1000 + 880, as the CLI fetches
        stored = http.get("/api/v1/candles", params={**body, "limit": 5000}).json()
        assert stored["count"] == 2880 and stored["candles"]["timestamp"][0] == 1_714_521_600_000
        again = _wait(http, http.post("/api/v1/data/downloads", json=body).json()["id"], {"completed", "failed"})
        assert again["status"] == "completed"
        assert len(fake_binance.requests_to("/api/v3/klines")) == 3  # the store had it all


def test_the_log_tail_leaves_warnings_on_stderr_where_python_prints_them() -> None:
    import subprocess
    import sys

    script = (
        "import logging\n"
        "from cracktrader.web.logs.buffer import LogTail\n"
        "tail = LogTail()\n"
        "tail.attach()\n"
        "logging.getLogger('cracktrader.x').warning('seen on stderr')\n"
        "assert [line['message'] for line in tail.tail(level=0, run_id=None, limit=5)] == ['seen on stderr']\n"
        "tail.detach()\n"
        "assert logging.getLogger().handlers == []\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "seen on stderr\n"


def test_a_download_job_is_read_and_canceled_through_another_server_process(pg: Any) -> None:
    with (
        LiveServer(pg) as a,
        LiveServer(pg) as b,
        httpx.Client(base_url=a.base_url, timeout=30) as on_a,
        httpx.Client(base_url=b.base_url, timeout=30) as on_b,
    ):
        job = on_a.post("/api/v1/data/downloads", json=BIG).json()
        seen_on_b = on_b.get(f"/api/v1/data/downloads/{job['id']}")
        canceled = on_b.delete(f"/api/v1/data/downloads/{job['id']}")
        done = _wait(on_b, job["id"], {"completed", "failed", "canceled"})
        unknown = on_b.get(f"/api/v1/data/downloads/{'f' * 32}")
        on_a_now = on_a.get(f"/api/v1/data/downloads/{job['id']}").json()
    assert seen_on_b.status_code == 200 and seen_on_b.json()["id"] == job["id"], seen_on_b.text
    assert seen_on_b.json()["status"] in ("queued", "running")
    assert canceled.status_code == 200 and canceled.json()["id"] == job["id"]
    assert done["status"] == "canceled" and done == on_a_now  # the same job, wherever it is read
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NOT_FOUND"
