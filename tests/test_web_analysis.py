"""A run's chart, round trips and breakdowns over a real server: values against the results, bounds and errors."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from auth_support import auth_client, bearer, wait_done
from cracktrader.client import AsyncCrackTraderAPI, CrackTraderAPI
from cracktrader.data import service as data_service
from cracktrader.data.candles import Candles
from cracktrader.runs.roundtrips import SORT_FIELDS
from cracktrader.settings import get_settings
from cracktrader.web.analysis.router import SortColumn
from web_support import YEAR_1H, LiveServer

SL, TP = 0.03, 0.06
RISKY = {**YEAR_1H, "strategy_name": "SmaCross", "strategy_params": {"stop_loss": SL, "take_profit": TP}}
WEEK = ("2024-03-04T00:00:00Z", "2024-03-11T00:00:00Z")


def _backtest(http: httpx.Client, body: dict[str, Any]) -> str:
    run_id = str(http.post("/api/v1/run/backtest", json=body).raise_for_status().json()["run_id"])
    deadline = time.monotonic() + 300  # a safety net, not a speed bound
    while time.monotonic() < deadline:
        status = http.get("/api/v1/status").json()
        if status["status"] in {"completed", "failed", "stopped"}:
            assert status["status"] == "completed", status
            http.delete("/api/v1/run/reset")
            return run_id
        time.sleep(0.02)
    raise AssertionError("backtest did not finish")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    """One real server with one finished SmaCross run (stop-loss and take-profit set), shared by the module."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CRACKTRADER_DATA_DIR", str(tmp_path_factory.mktemp("analysis")))
        for name in ("DATABASE_URL", "CRACKTRADER_DATABASE_URL", "CRACKTRADER_STRATEGY_DIR"):
            env.delenv(name, raising=False)
        get_settings.cache_clear()
        settings = get_settings()
        get_settings.cache_clear()
        with LiveServer(settings) as server, httpx.Client(base_url=server.base_url, timeout=60) as http:
            yield server, _backtest(http, RISKY)


@pytest.fixture
def http(served: tuple[LiveServer, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[0].base_url, timeout=60) as client:
        yield client


@pytest.fixture
def run_id(served: tuple[LiveServer, str]) -> str:
    return served[1]


def _all_trips(http: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    page = http.get(f"/api/v1/runs/{run_id}/roundtrips", params={"limit": 1000}).json()
    assert page["total"] <= 1000
    return list(page["items"])


def test_run_candles_without_a_range_are_bucketed_to_max_points(http: httpx.Client, run_id: str) -> None:
    doc = http.get(f"/api/v1/runs/{run_id}/candles").json()
    assert doc["bars"] == 8784 and doc["bucket_bars"] == 2  # 8,784 bars, at most 5,000 points by default
    candles = doc["candles"]
    assert len(candles["timestamp"]) == 4392 and all(len(v) == 4392 for v in candles.values())
    full = http.get(f"/api/v1/runs/{run_id}/candles", params={"start": "2024-01-01", "end": "2024-01-01T04:00:00Z"})
    bars = full.json()["candles"]
    # The first bucket is the first two bars: first open, highest high, lowest low, last close, summed volume.
    assert candles["open"][0] == bars["open"][0] and candles["close"][0] == bars["close"][1]
    assert candles["high"][0] == max(bars["high"][:2]) and candles["low"][0] == min(bars["low"][:2])
    assert candles["volume"][0] == pytest.approx(sum(bars["volume"][:2]))
    assert doc["run_range"] == {"start": "2024-01-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}
    small = http.get(f"/api/v1/runs/{run_id}/candles", params={"max_points": 100}).json()
    assert small["bucket_bars"] == 88 and len(small["candles"]["timestamp"]) == 100


def test_run_candles_of_a_range_are_full_detail_with_indicators_and_markers(http: httpx.Client, run_id: str) -> None:
    doc = http.get(f"/api/v1/runs/{run_id}/candles", params={"start": WEEK[0], "end": WEEK[1]}).json()
    assert doc["bucket_bars"] == 1 and doc["bars"] == 168 and doc["start"] == WEEK[0] and doc["end"] == WEEK[1]
    stored = http.get(
        "/api/v1/candles",
        params={"exchange": "synthetic", "symbol": "BTC/USDT", "start": WEEK[0], "end": WEEK[1], "limit": 1000},
    ).json()
    assert stored["candles"] == doc["candles"]  # the run's candles are the exchange's
    names = [s["name"] for s in doc["indicators"]]
    assert names == ["sma_10", "sma_30"]
    closes = np.array(doc["candles"]["close"])
    assert doc["indicators"][0]["values"][-1] == pytest.approx(closes[-10:].mean())
    assert doc["indicators"][1]["values"][-1] == pytest.approx(closes[-30:].mean())
    start_ms, end_ms = doc["candles"]["timestamp"][0], doc["candles"]["timestamp"][-1] + 3_600_000
    overlapping = [
        t for t in _all_trips(http, run_id) if _ms(t["entry_time"]) < end_ms and _ms(t["exit_time"]) >= start_ms
    ]
    assert doc["markers"] == overlapping and doc["markers_total"] == len(overlapping) and overlapping


def _ms(iso: str) -> int:
    return int(np.datetime64(iso.rstrip("Z"), "ms").astype(np.int64))


def test_round_trips_are_the_results_closing_fills(http: httpx.Client, run_id: str) -> None:
    results = http.get(f"/api/v1/runs/{run_id}/results", params={"limit": 50_000}).json()
    closing = [t for t in results["trades"] if t["pnl"] is not None]
    trips = _all_trips(http, run_id)
    assert len(trips) == len(closing) == results["performance_metrics"]["total_trades"]
    by_order = {t["order_id"]: t for t in results["trades"]}
    for trip, fill in zip(trips, closing, strict=True):
        assert trip["exit_order_id"] == fill["order_id"] and trip["pnl"] == fill["pnl"]
        assert trip["exit_price"] == fill["price"] and trip["exit_time"] == fill["timestamp"]
        assert trip["pnl_pct"] == pytest.approx(fill["return_pct"] * 100)
        entry = by_order[fill["order_id"] - 1]  # SmaCross goes all in and all out: the fill before opened it
        assert trip["entry_price"] == entry["price"] and trip["entry_time"] == entry["timestamp"]
        assert trip["fees"] == pytest.approx(entry["commission"] + fill["commission"])
        assert trip["duration_s"] == (_ms(trip["exit_time"]) - _ms(trip["entry_time"])) / 1000
        assert trip["side"] == "long"
        if trip["exit_reason"] == "stop_loss":
            assert trip["stop_loss"] == trip["exit_price"]
        else:
            assert trip["stop_loss"] == pytest.approx(trip["entry_price"] * (1 - SL))
        if trip["exit_reason"] != "take_profit":
            assert trip["take_profit"] == pytest.approx(trip["entry_price"] * (1 + TP))
    assert {"stop_loss", "take_profit", "signal"} <= {t["exit_reason"] for t in trips}


@pytest.mark.parametrize("column", sorted(SORT_FIELDS))
def test_round_trips_sort_by_each_column_both_ways(http: httpx.Client, run_id: str, column: str) -> None:
    key = {"duration": "duration_s"}.get(column, column)
    for order in ("asc", "desc"):
        page = http.get(f"/api/v1/runs/{run_id}/roundtrips", params={"sort": column, "order": order, "limit": 1000})
        values = [t[key] for t in page.json()["items"]]
        assert values == sorted(values, reverse=order == "desc"), (column, order)


def test_round_trips_are_paged(http: httpx.Client, run_id: str) -> None:
    everything = _all_trips(http, run_id)
    page = http.get(f"/api/v1/runs/{run_id}/roundtrips", params={"sort": "pnl", "order": "desc", "limit": 5})
    body = page.json()
    assert body["total"] == len(everything) and body["limit"] == 5 and body["offset"] == 0
    best = sorted(everything, key=lambda t: -t["pnl"])
    assert [t["pnl"] for t in body["items"]] == [t["pnl"] for t in best[:5]]
    later = http.get(
        f"/api/v1/runs/{run_id}/roundtrips", params={"sort": "pnl", "order": "desc", "limit": 5, "offset": 5}
    )
    assert [t["pnl"] for t in later.json()["items"]] == [t["pnl"] for t in best[5:10]]
    beyond = http.get(f"/api/v1/runs/{run_id}/roundtrips", params={"offset": len(everything)}).json()
    assert beyond["items"] == [] and beyond["total"] == len(everything)


def test_the_sort_columns_are_one_list() -> None:
    assert set(SortColumn.__args__) == set(SORT_FIELDS)


def test_breakdowns_add_up_to_the_run(http: httpx.Client, run_id: str) -> None:
    doc = http.get(f"/api/v1/runs/{run_id}/breakdowns").json()
    trips = _all_trips(http, run_id)
    [btc] = doc["by_symbol"]
    assert btc["symbol"] == "BTC/USDT" and btc["trades"] == len(trips)
    assert btc["pnl"] == pytest.approx(sum(t["pnl"] for t in trips))
    assert btc["wins"] == sum(t["pnl"] > 0 for t in trips) and btc["win_rate"] == btc["wins"] / len(trips)
    assert btc["return_pct"] == pytest.approx(btc["pnl"] / 10_000 * 100)
    months = doc["monthly"]
    assert [m["month"] for m in months] == [f"2024-{k:02d}" for k in range(1, 13)]
    assert months[0]["start_value"] == 10_000.0
    compounded = math.prod(1 + m["return_pct"] / 100 for m in months)
    final = http.get(f"/api/v1/runs/{run_id}").json()["final_value"]
    assert compounded == pytest.approx(final / 10_000)
    assert all(a["end_value"] == b["start_value"] for a, b in itertools.pairwise(months))


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/runs/{run}/candles", {"max_points": 1}, 422, "VALIDATION_ERROR"),
        ("/runs/{run}/candles", {"max_points": 10**9}, 422, "VALIDATION_ERROR"),
        ("/runs/{run}/candles", {"max_points": "nan"}, 422, "VALIDATION_ERROR"),
        ("/runs/{run}/candles", {"start": "nan"}, 422, "INVALID_DATE_RANGE"),
        ("/runs/{run}/candles", {"start": "99999999999999999999"}, 422, "INVALID_DATE_RANGE"),
        ("/runs/{run}/candles", {"start": WEEK[1], "end": WEEK[0]}, 422, "INVALID_DATE_RANGE"),
        ("/runs/{run}/candles", {"symbol": "DOGE/USDT"}, 404, "SYMBOL_NOT_IN_RUN"),
        ("/runs/{run}/candles", {"symbol": "x" * 65}, 422, "VALIDATION_ERROR"),
        ("/runs/{run}/roundtrips", {"sort": "bogus"}, 422, "VALIDATION_ERROR"),
        ("/runs/{run}/roundtrips", {"order": "up"}, 422, "VALIDATION_ERROR"),
        ("/runs/{run}/roundtrips", {"limit": 10**6}, 422, "VALIDATION_ERROR"),
        ("/runs/{run}/roundtrips", {"offset": -1}, 422, "VALIDATION_ERROR"),
        ("/runs/{missing}/candles", {}, 404, "NOT_FOUND"),
        ("/runs/{missing}/roundtrips", {}, 404, "NOT_FOUND"),
        ("/runs/{missing}/breakdowns", {}, 404, "NOT_FOUND"),
    ],
)
def test_bad_input_gets_a_clear_error(
    http: httpx.Client, run_id: str, path: str, params: dict[str, Any], status: int, code: str
) -> None:
    r = http.get("/api/v1" + path.format(run=run_id, missing="0" * 32), params=params)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_the_sdks_read_the_chart_round_trips_and_breakdowns(served: tuple[LiveServer, str]) -> None:
    server, run_id = served
    with CrackTraderAPI(server.base_url) as api:
        chart = api.run_candles(run_id, start=WEEK[0], end=WEEK[1])
        assert chart.bars == 168 and chart.indicators[0].name == "sma_10" and chart.markers
        trips = api.round_trips(run_id, sort="pnl", order="desc", limit=3)
        assert len(trips.items) == 3 and trips.items[0].pnl >= trips.items[1].pnl  # type: ignore[operator]
        assert api.breakdowns(run_id).by_symbol[0].trades == trips.total

    async def read() -> None:
        async with AsyncCrackTraderAPI(server.base_url) as api:
            chart = await api.run_candles(run_id, max_points=10)
            assert chart.bucket_bars == 879 and len(chart.candles.timestamp) == 10
            assert (await api.round_trips(run_id)).total == trips.total
            assert len((await api.breakdowns(run_id)).monthly) == 12

    import asyncio

    asyncio.run(read())


async def _owned_run() -> None:
    async with auth_client() as c:
        alice = await bearer(c, "alice")
        bob = await bearer(c, "bob")
        admin = await bearer(c, "root", role="admin")
        short = {**RISKY, "end_date": "2024-02-01T00:00:00Z"}
        r = await c.post("/api/v1/run/backtest", json=short, headers=alice)
        run_id = r.json()["run_id"]
        await wait_done(c, alice)
        for path in ("candles", "roundtrips", "breakdowns"):
            assert (await c.get(f"/api/v1/runs/{run_id}/{path}", headers=alice)).status_code == 200
            assert (await c.get(f"/api/v1/runs/{run_id}/{path}", headers=admin)).status_code == 200
            denied = await c.get(f"/api/v1/runs/{run_id}/{path}", headers=bob)
            assert denied.status_code == 404 and denied.json()["error"]["code"] == "NOT_FOUND"
            assert (await c.get(f"/api/v1/runs/{run_id}/{path}")).status_code == 401


def test_with_auth_on_only_the_owner_and_admins_see_a_run() -> None:
    import asyncio

    asyncio.run(_owned_run())


BROKEN_PLOT = '''
from cracktrader.strategies.builtin import SmaCross


class BrokenPlot(SmaCross):
    """SmaCross whose plot() raises."""

    def plot(self, bars):
        raise RuntimeError("no chart today")
'''


def test_a_run_of_two_symbols_charts_each_and_a_failing_plot_keeps_the_candles(tmp_path: Any) -> None:
    folder = tmp_path / "strategies"
    folder.mkdir()
    (folder / "broken.py").write_text(BROKEN_PLOT)
    settings = get_settings().model_copy(update={"strategy_dir": folder})
    body = {**RISKY, "strategy_name": "BrokenPlot", "symbols": ["BTC/USDT", "ETH/USDT"], "end_date": "2024-03-01"}
    with LiveServer(settings) as server, httpx.Client(base_url=server.base_url, timeout=60) as http:
        run_id = _backtest(http, body)
        eth = http.get(f"/api/v1/runs/{run_id}/candles", params={"symbol": "eth/usdt"}).json()
        assert eth["symbol"] == "ETH/USDT" and eth["symbols"] == ["BTC/USDT", "ETH/USDT"] and eth["bars"] == 1440
        assert eth["indicators"] == [] and eth["indicators_error"] == "RuntimeError: no chart today"
        assert eth["markers"] and {m["symbol"] for m in eth["markers"]} == {"ETH/USDT"}
        btc = http.get(f"/api/v1/runs/{run_id}/candles").json()
        assert btc["symbol"] == "BTC/USDT" and {m["symbol"] for m in btc["markers"]} == {"BTC/USDT"}
        assert btc["candles"]["close"] != eth["candles"]["close"]
        parts = http.get(f"/api/v1/runs/{run_id}/breakdowns").json()["by_symbol"]
        total = http.get(f"/api/v1/runs/{run_id}/roundtrips").json()["total"]
        assert [p["symbol"] for p in parts] == ["BTC/USDT", "ETH/USDT"]
        assert sum(p["trades"] for p in parts) == total
        assert parts[1]["trades"] == eth["markers_total"]
        # A deleted run is gone from these too, whatever was computed for it before.
        assert http.delete(f"/api/v1/runs/{run_id}").status_code == 204
        for path in ("candles", "roundtrips", "breakdowns"):
            assert http.get(f"/api/v1/runs/{run_id}/{path}").status_code == 404


def test_a_run_on_stored_candles_charts_the_stored_candles() -> None:
    ts = np.arange(500, dtype=np.int64) * 3_600_000 + 1_704_067_200_000
    close = 100 + 10 * np.sin(np.arange(500) / 12)
    candles = Candles.from_columns(ts, close, close + 1, close - 1, close, np.ones(500))
    data_service.open_store(get_settings()).write("csv", "ABC/USD", "1h", candles)
    body = {**YEAR_1H, "strategy_name": "SmaCross", "exchange": "csv", "symbols": ["ABC/USD"]}
    body.pop("start_date"), body.pop("end_date")
    with LiveServer(get_settings()) as server, httpx.Client(base_url=server.base_url, timeout=60) as http:
        run_id = _backtest(http, body)
        doc = http.get(f"/api/v1/runs/{run_id}/candles").json()
        assert doc["exchange"] == "csv" and doc["bucket_bars"] == 1 and doc["bars"] == 500
        assert doc["candles"]["timestamp"] == ts.tolist() and doc["candles"]["close"] == close.tolist()
        assert doc["markers_total"] == http.get(f"/api/v1/runs/{run_id}/roundtrips").json()["total"] > 0
