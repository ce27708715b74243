"""`cracktrader report RUN_ID -o report.html`: the results page as one file that opens offline.

The file is written by the CLI from a real server, then opened from `file://` in Debian's Chromium with every
request that is not `file:` or `data:` aborted: it draws its charts with no console error, and the numbers on it
are the API's.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import ui_support
from cracktrader import report
from cracktrader.cli import app
from cracktrader.report import MAX_CANDLES, UI_DIR, report_modules
from ui_support import WatchedPage, backtest
from web_support import LiveServer

browser_context = ui_support.browser_context
runner = CliRunner()


@pytest.fixture
def server() -> Iterator[LiveServer]:
    with LiveServer() as s:
        yield s


@pytest.fixture
def api(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as c:
        yield c


@pytest.fixture
def run_id(api: httpx.Client) -> str:
    """A two-month hourly backtest with trades."""
    return backtest(api)


@pytest.fixture
def report_file(server: LiveServer, run_id: str, tmp_path: Path) -> Path:
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", run_id, "--server", server.base_url, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    return out


def test_the_report_refers_to_nothing_outside_the_file(report_file: Path) -> None:
    page = report_file.read_text(encoding="utf-8")
    srcs = re.findall(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?([^"' >]+)""", page)
    assert srcs == []
    # Every module is a data: URL of the import map, and every import names one of them.
    imports = json.loads(re.search(r'<script type="importmap">(.*?)</script>', page, re.S).group(1))["imports"]
    assert all(url.startswith("data:text/javascript;base64,") for url in imports.values())
    for key, url in imports.items():
        source = base64.b64decode(url.split(",", 1)[1]).decode("utf-8")
        if "/vendor/" in key:  # the libraries as vendored, byte for byte; they import nothing
            assert source == (UI_DIR / key.split("/", 1)[1]).read_text(encoding="utf-8")
            continue
        for name in re.findall(r"""(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)["']([^"']+)["']""", source):
            assert name in imports, name
    assert "connect-src 'none'" in page  # the CSP meta tag: the browser refuses any fetch from the page
    # The licences of both inlined libraries travel with them (Apache-2.0: licence and NOTICE; MIT: notice).
    assert "Apache License" in page and "Version 2.0, January 2004" in page
    assert "TradingView Lightweight Charts™" in page and "Copyright (c) 2022 Leon Sorokin" in page


def test_the_modules_are_the_dashboard_s_with_the_embedded_data_in_place_of_the_api() -> None:
    modules = report_modules()
    assert "pages/results.js" in modules and "charts.js" in modules and "table.js" in modules
    assert "report/data.js" in modules and "api.js" not in modules
    assert not any(p.startswith("sdk/") for p in modules)
    assert 'from "cracktrader-ui/report/data.js"' in modules["pages/results.js"]


def test_a_long_run_s_candles_are_bucketed_and_the_file_stays_small(
    server: LiveServer, api: httpx.Client, tmp_path: Path
) -> None:
    """Ten years of hourly bars (87,672) with slow averages (few trades): 2,000 buckets, a file under 1.5 MB."""
    params = {"fast": 500, "slow": 2000}
    long_run = backtest(api, start_date="2015-01-01", end_date="2025-01-01", strategy_params=params)
    out = tmp_path / "long.html"
    result = runner.invoke(app, ["report", long_run, "--server", server.base_url, "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = _embedded(out)
    candles = data["candles"]["BTC/USDT"]
    assert candles["bars"] == 87_672 and candles["bucket_bars"] == 44
    assert len(candles["candles"]["timestamp"]) <= MAX_CANDLES
    assert len(data["results"]["equity_curve"]) <= MAX_CANDLES
    assert out.stat().st_size < 1_500_000


def test_zooming_into_a_long_run_s_report_shows_the_buckets_of_the_visible_range_once(
    server: LiveServer, api: httpx.Client, tmp_path: Path, browser_context: Any
) -> None:
    """The file holds the buckets only: a zoom draws the visible ones (no server to ask for detail), and settles."""
    long_run = backtest(
        api, start_date="2015-01-01", end_date="2025-01-01", strategy_params={"fast": 500, "slow": 2000}
    )
    out = tmp_path / "long.html"
    assert runner.invoke(app, ["report", long_run, "--server", server.base_url, "-o", str(out)]).exit_code == 0
    page, asked = _offline_page(browser_context, out)
    p = page.page
    p.wait_for_selector("#candle-chart canvas")
    whole = int(p.get_attribute("#candle-chart", "data-candles"))
    p.evaluate("""() => { window.__draws = 0; new MutationObserver(() => { window.__draws += 1; })
        .observe(document.getElementById('candle-chart'), { attributeFilter: ['data-candles'] }); }""")
    box = p.query_selector("#candle-chart").bounding_box()
    p.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(6):
        p.mouse.wheel(0, -400)
    shown = "(n) => Number(document.getElementById('candle-chart').dataset.candles) < n"
    p.wait_for_function(shown, arg=whole, timeout=10_000)
    draws = p.evaluate("window.__draws")
    p.wait_for_timeout(1500)  # a settled zoom asks once: no redraw loop
    assert p.evaluate("window.__draws") == draws
    assert "candles of 44 bars (the report's buckets; full detail in the dashboard)" in p.text_content("#candle-info")
    assert asked == []
    page.assert_clean()
    page.close()


def test_at_most_max_rows_round_trips_fills_and_orders_are_embedded_and_the_page_says_so(
    server: LiveServer, api: httpx.Client, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "MAX_ROWS", 3)
    monkeypatch.setattr(report, "ROUND_TRIP_PAGE", 2)  # paged like a long run's: 2 + 1
    out = tmp_path / "r.html"
    assert runner.invoke(app, ["report", run_id, "--server", server.base_url, "-o", str(out)]).exit_code == 0
    data = _embedded(out)
    trips = api.get(f"/api/v1/runs/{run_id}/roundtrips", params={"limit": 3}).json()
    assert _rows(data["round_trips"]) == trips["items"]
    assert len(_rows(data["results"]["trades"])) == 3 and len(_rows(data["results"]["orders"])) == 3
    fills = api.get(f"/api/v1/runs/{run_id}/results", params={"limit": 1}).json()["page"]["trades"]["total"]
    assert f"the first 3 of {trips['total']:,} round trips, the first 3 of {fills:,} fills" in out.read_text()


def test_an_unknown_run_exits_non_zero_with_the_api_s_message(server: LiveServer, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    result = runner.invoke(app, ["report", "0" * 32, "--server", server.base_url, "-o", str(out)])
    assert result.exit_code == 1
    assert result.output == f"error: [404 NOT_FOUND] No run with id '{'0' * 32}'\n"
    assert not out.exists()


def _embedded(path: Path) -> dict[str, Any]:
    """The JSON document embedded in a report file."""
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', path.read_text(), re.S)
    assert found
    data: dict[str, Any] = json.loads(found.group(1))
    return data


def _rows(packed: dict[str, Any]) -> list[dict[str, Any]]:
    """A list the file stores as columns and rows, as the API's objects."""
    return [dict(zip(packed["$columns"], row, strict=True)) for row in packed["$rows"]]


def _offline_page(context: Any, path: Path) -> tuple[WatchedPage, list[str]]:
    """The report opened from file:// with every other request aborted (and recorded)."""
    page = WatchedPage(context)
    asked: list[str] = []

    def guard(route: Any) -> None:
        url = route.request.url
        if url.startswith(("file:", "data:")):
            route.continue_()
        else:
            asked.append(url)
            route.abort()

    page.page.route("**/*", guard)
    page.page.goto(path.as_uri())
    page.page.wait_for_selector("body[data-ready]", timeout=30_000)
    return page, asked


def test_the_report_opens_offline_with_its_charts_and_the_api_s_numbers(
    api: httpx.Client, run_id: str, report_file: Path, browser_context: Any
) -> None:
    doc = api.get(f"/api/v1/runs/{run_id}/results", params={"limit": 1000}).json()
    trips = api.get(f"/api/v1/runs/{run_id}/roundtrips", params={"limit": 1000}).json()
    breakdowns = api.get(f"/api/v1/runs/{run_id}/breakdowns").json()
    metrics = doc["performance_metrics"]
    page, asked = _offline_page(browser_context, report_file)
    p = page.page
    assert p.get_attribute("#view", "data-data-ready") == "true"
    assert p.query_selector_all("#equity-chart canvas") and p.query_selector_all("#candle-chart canvas")
    assert p.text_content("#final-value") == f"{doc['final_value']:,.2f}"
    shown = {
        el.get_attribute("data-metric"): el.query_selector(".value").text_content()
        for el in p.query_selector_all("#metrics .metric")
    }
    assert shown["total_return"] == f"{metrics['total_return'] * 100:,.2f} %"
    assert shown["max_drawdown"] == f"{metrics['max_drawdown'] * 100:,.2f} %"
    assert shown["sharpe_ratio"] == f"{metrics['sharpe_ratio']:,.2f}"
    assert shown["fees_paid"] == f"{metrics['fees_paid']:,.2f}"
    assert shown["total_trades"] == str(metrics["total_trades"])
    assert p.text_content('#metrics [data-metric="total_return"] .help') == "F / C - 1 (fraction)"
    # Tables page and sort from the file as they do from the API.
    assert p.text_content("#roundtrips .pager-info") == f"1–{min(25, trips['total'])} of {trips['total']}"
    assert p.text_content("#trades .pager-info") == f"1–25 of {len(doc['trades'])}"
    p.click('#roundtrips th[data-key="pnl"]')
    p.wait_for_selector('#roundtrips[data-loaded="pnl:asc:0"]')
    worst = min(t["pnl"] for t in trips["items"])
    first_pnl = p.text_content("#roundtrips tbody tr:first-child td:nth-child(8)")
    assert float(first_pnl.replace(",", "")) == pytest.approx(worst, abs=0.006)
    months = [el.text_content() for el in p.query_selector_all('#monthly td[data-key="month"]')]
    assert months == [m["month"] for m in breakdowns["monthly"]]
    assert not p.is_visible("#rerun") and not p.is_visible("#delete")
    assert asked == []
    page.assert_clean()
    page.close()


def test_each_symbol_of_a_run_has_its_candles_in_the_report(
    server: LiveServer, api: httpx.Client, tmp_path: Path, browser_context: Any
) -> None:
    two = backtest(api, symbols=["BTC/USDT", "ETH/USDT"])
    out = tmp_path / "two.html"
    assert runner.invoke(app, ["report", two, "--server", server.base_url, "-o", str(out)]).exit_code == 0
    page, asked = _offline_page(browser_context, out)
    p = page.page
    assert p.text_content("#candle-info").startswith("BTC/USDT · ")
    p.select_option("#candle-symbol", "ETH/USDT")
    p.wait_for_function("() => document.getElementById('candle-info').textContent.startsWith('ETH/USDT · ')")
    assert p.query_selector_all("#candle-chart canvas")
    assert asked == []
    page.assert_clean()
    page.close()
