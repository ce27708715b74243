"""The dashboard at /ui in a real browser (Debian's Chromium under Playwright) against a real uvicorn.

Every page: no console error and no CSP violation, nothing wider than the screen at 390 px, screenshots at
1400x900 and 390x844. The numbers on screen are the API's; the flows work by clicking.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

import ui_support
from cracktrader.brokers.risk import RiskLimits
from cracktrader.sweeps.grid import parse_range
from cracktrader.web.ui.router import UI_DIR
from ui_support import DESKTOP, PHONE, WatchedPage, backtest, paper_session, screenshot_dir, wait_run
from web_support import LiveServer

browser_context = ui_support.browser_context
SECRET = "ui-test-secret-" + "0123456789abcdef" * 4
PASSWORD = "correct horse battery"


@pytest.fixture
def server() -> Iterator[LiveServer]:
    """A real server on a free loopback port, on this test's own data folder."""
    with LiveServer() as s:
        yield s


@pytest.fixture
def api(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as c:
        yield c


def money(v: float) -> str:
    return f"{v:,.2f}"


def percent(v: float) -> str:
    return f"{v * 100:,.2f} %"


def shoot(page: WatchedPage, name: str, viewport: dict[str, int]) -> None:
    """A full-page screenshot named after the page and the screen width."""
    page.page.evaluate("window.scrollTo(0, 0)")  # a sticky header would otherwise sit mid-page
    page.page.wait_for_timeout(300)  # let charts settle after their resize observer
    page.page.screenshot(path=str(screenshot_dir() / f"{name}-{viewport['width']}.png"), full_page=True)


def assert_fits(page: WatchedPage) -> None:
    """Nothing scrolls sideways: the document is no wider than the window."""
    width, inner = page.page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= inner, f"{width}px wide in a {inner}px window"


def test_every_page_renders_cleanly_at_desktop_and_phone_widths(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    first = backtest(api)
    second = backtest(api, strategy_name="EmaCross", symbols=["ETH/USDT"])
    session = paper_session(api)
    routes = {
        "backtest": "backtest",
        "results": f"runs/{first}",
        "history": "history",
        "compare": f"compare/{first},{second}",
        "sessions": "sessions",
        "session": f"sessions/{session}",
        "account": "account",
        "strategies": "strategies/SmaCross",
        "data": "data",
        "logs": "logs",
    }
    try:
        for viewport in (DESKTOP, PHONE):
            page = WatchedPage(browser_context, viewport)
            for name, route in routes.items():
                page.open(server.base_url, route)
                if name in ("results", "compare"):
                    page.page.wait_for_selector(".chart canvas")
                if name == "session":
                    page.page.wait_for_selector("#session-status")
                assert_fits(page)
                shoot(page, name, viewport)
            page.assert_clean()
            page.close()
    finally:
        api.post(f"/api/v1/runs/{session}/stop", json={})


def test_results_page_shows_the_api_numbers_with_help_from_the_metrics_doc(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    run_id = backtest(api)
    doc = api.get(f"/api/v1/runs/{run_id}/results", params={"limit": 1000}).json()
    metrics = doc["performance_metrics"]
    page = WatchedPage(browser_context)
    p = page.open(server.base_url, f"runs/{run_id}")
    p.wait_for_selector("#equity-chart canvas")
    assert p.text_content("#final-value") == money(doc["final_value"])
    shown = {
        el.get_attribute("data-metric"): el.query_selector(".value").text_content()
        for el in p.query_selector_all("#metrics .metric")
    }
    assert shown["total_return"] == percent(metrics["total_return"])
    assert shown["max_drawdown"] == percent(metrics["max_drawdown"])
    assert shown["sharpe_ratio"] == f"{metrics['sharpe_ratio']:,.2f}"
    assert shown["fees_paid"] == money(metrics["fees_paid"])
    assert shown["total_trades"] == str(metrics["total_trades"])
    assert shown["max_drawdown_duration_bars"] == f"{metrics['max_drawdown_duration_bars']} bars"
    help_line = p.text_content('#metrics [data-metric="total_return"] .help')
    assert help_line == "F / C - 1 (fraction)"  # docs/metrics.md's row for total_return
    # Fills: paged 25 at a time over every fill of the run; sorting by price puts the cheapest first.
    assert p.text_content("#trades .pager-info") == f"1–25 of {len(doc['trades'])}"
    p.click('#trades th[data-key="price"]')
    cheapest = min(t["price"] for t in doc["trades"])
    first_price = p.text_content("#trades tbody tr:first-child td:nth-child(5)")
    assert float(first_price.replace(",", "")) == pytest.approx(cheapest, rel=1e-8)
    assert p.text_content("#orders .pager-info") == f"1–25 of {doc['page']['orders']['total']}"
    page.assert_clean()
    page.close()


def test_a_backtest_started_from_the_form_completes_and_opens_with_its_chart(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    page = WatchedPage(browser_context)
    p = page.open(server.base_url, "backtest")
    p.select_option("#strategy", "SmaCross")
    p.wait_for_selector("#param-fast")
    assert p.input_value("#param-fast") == "10"  # the schema's default
    p.fill("#param-fast", "0")
    assert p.text_content("#param-fast-error") == "Must be at least 1"
    p.click("#start-run")
    assert "Fix the fields" in p.text_content("#message")
    # Another strategy, then back: the parameters start again from the defaults.
    p.select_option("#strategy", "EmaCross")
    p.select_option("#strategy", "SmaCross")
    expect(p.locator("#param-fast")).to_have_value("10")
    p.fill("#param-fast", "5")
    p.fill("#start", "2024-01-01")
    p.fill("#end", "2024-02-01")
    p.click("#start-run")
    p.wait_for_selector("#open-results", timeout=120_000)
    status = api.get("/api/v1/status").json()
    assert status["status"] == "completed"
    p.click("#open-results")
    p.wait_for_selector("#equity-chart canvas")
    run = api.get(f"/api/v1/runs/{status['run_id']}").json()
    assert run["config"]["strategy_params"] == {"fast": 5}
    assert p.text_content("#final-value") == money(run["final_value"])
    page.assert_clean()
    page.close()


def test_parameters_saved_as_a_preset_come_back_as_its_defaults(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    page = WatchedPage(browser_context)
    p = page.open(server.base_url, "backtest")
    p.select_option("#strategy", "SmaCross")
    expect(p.locator("#param-fast")).to_have_value("10")
    p.fill("#param-fast", "7")
    p.fill("#preset-name", "sma-7")
    p.click("#save-preset")
    expect(p.locator("#message")).to_have_text("Preset sma-7 saved")
    stored = next(
        s for s in api.get("/api/v1/strategies", params={"kind": "preset"}).json()["items"] if s["name"] == "sma-7"
    )
    assert (stored["kind"], stored["base_strategy"], stored["parameters"]) == ("preset", "SmaCross", {"fast": 7})
    assert p.input_value("#strategy") == "sma-7"
    expect(p.locator("#param-fast")).to_have_value("7")
    page.open(server.base_url, "history")  # and after a reload it is in the list
    p = page.open(server.base_url, "backtest")
    p.select_option("#strategy", "sma-7")
    expect(p.locator("#param-fast")).to_have_value("7")
    page.assert_clean()
    page.close()


def test_a_running_backtest_shows_its_phase_and_eta_and_stops_from_the_form(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    page = WatchedPage(browser_context)
    p = page.open(server.base_url, "backtest")
    p.select_option("#strategy", "SlowStrategy")  # at least 5 ms a bar: 8,784 bars take 44 s or more
    p.wait_for_selector("#param-bar_ms")
    p.fill("#start", "2024-01-01")
    p.fill("#end", "2025-01-01")
    p.click("#start-run")
    expect(p.locator("#phase")).to_contain_text("simulating", timeout=60_000)
    expect(p.locator("#eta")).to_contain_text("ETA")
    assert api.get("/api/v1/status").json()["status"] == "running"
    p.click("#stop-run")
    expect(p.locator("#status-pill")).to_have_text("stopped", timeout=30_000)
    assert api.get("/api/v1/status").json()["status"] == "stopped"
    p.click("#reset-run")
    expect(p.locator("#status-pill")).to_have_text("idle")
    page.assert_clean()
    page.close()


def test_two_runs_picked_in_the_history_are_compared(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    a = backtest(api)
    b = backtest(api, strategy_name="EmaCross")
    page = WatchedPage(browser_context)
    p = page.open(server.base_url, "history")
    assert p.text_content("#history-info") == "1–2 of 2"
    p.check(f'tr[data-run="{a}"] input[type=checkbox]')
    assert p.is_disabled("#compare")  # one run is not a comparison
    p.check(f'tr[data-run="{b}"] input[type=checkbox]')
    p.click("#compare")
    p.wait_for_selector("#compare-chart canvas")
    cells = p.query_selector_all('#compare-metrics tr[data-metric="total_return"] td')
    shown = [c.text_content() for c in cells]
    expected = [percent(api.get(f"/api/v1/runs/{x}").json()["total_return"]) for x in (b, a)]  # newest first
    assert sorted(shown) == sorted(expected)
    # Filtering the history by strategy leaves one.
    p = page.open(server.base_url, "history")
    p.select_option("#f-strategy", "EmaCross")
    expect(p.locator("#history-info")).to_have_text("1–1 of 1")
    page.assert_clean()
    page.close()


def test_a_paper_session_is_stopped_from_its_live_view_after_confirming(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    session = paper_session(api)
    page = WatchedPage(browser_context)
    p = page.open(server.base_url, "sessions")
    p.click(f'tr[data-run="{session}"] a')
    p.wait_for_selector("#session-status")
    expect(p.locator("#session-status")).to_have_text("running")
    expect(p.locator("#stream-state")).to_have_text("live")
    # Live data comes from the stream: while candles close, the page asks the API nothing.
    asked: list[str] = []
    p.on("request", lambda r: asked.append(r.url) if "/api/" in r.url else None)
    bars = int(p.text_content('[data-field="bars_processed"] .value') or 0)
    expect(p.locator('[data-field="bars_processed"] .value')).not_to_have_text(str(bars), timeout=30_000)
    expect(p.locator('[data-field="bars_processed"] .value')).not_to_have_text(str(bars + 1), timeout=30_000)
    assert asked == []
    p.click("#pause")
    p.click("dialog.confirm button.danger")
    expect(p.locator("#paused")).to_be_visible(timeout=30_000)
    assert api.get(f"/api/v1/runs/{session}/status").json()["risk"]["paused"] is True
    p.click("#resume")
    p.click("dialog.confirm button.danger")
    expect(p.locator("#paused")).to_have_count(0, timeout=30_000)
    p.click("#stop")
    p.click("dialog.confirm button:not(.danger)")  # Cancel: nothing happens
    assert api.get(f"/api/v1/runs/{session}").json()["status"] == "running"
    p.click("#stop")
    p.click("dialog.confirm button.danger")  # the confirmation
    expect(p.locator("#session-status")).to_have_text("stopped", timeout=30_000)
    assert wait_run(api, session)["status"] == "stopped"
    assert p.is_disabled("#stop")
    page.assert_clean()
    page.close()


def _wait_attribute(locator: Any, name: str, at_least: int, timeout: float = 30.0) -> int:
    """Read a numeric attribute until it reaches `at_least` (the page's CSP forbids wait_for_function's eval)."""
    deadline = time.monotonic() + timeout
    while True:
        value = int(locator.get_attribute(name) or 0)
        if value >= at_least:
            return value
        assert time.monotonic() < deadline, f"{name} stayed at {value} (< {at_least})"
        locator.page.wait_for_timeout(100)


def test_a_sessions_candle_chart_draws_its_history_and_grows_as_candles_close(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    session = paper_session(api)
    try:
        page = WatchedPage(browser_context)
        p = page.open(server.base_url, f"sessions/{session}")
        expect(p.locator("#stream-state")).to_have_text("live", timeout=30_000)
        p.wait_for_selector("#session-chart canvas")
        chart = p.locator("#session-chart")
        # The history is the session's candles: the last one drawn is one the API holds.
        history = api.get(f"/api/v1/runs/{session}/recent-candles", params={"limit": 5000}).json()
        first, first_last = int(chart.get_attribute("data-candles") or 0), int(chart.get_attribute("data-last") or 0)
        assert first >= 1 and first_last in history["candles"]["timestamp"]
        # Then the stream adds each candle as it closes: no request is made for them.
        asked: list[str] = []
        p.on("request", lambda r: asked.append(r.url) if "/api/" in r.url else None)
        _wait_attribute(chart, "data-candles", first + 3)
        assert asked == []
        later = api.get(f"/api/v1/runs/{session}/recent-candles", params={"limit": 5000}).json()
        drawn = int(chart.get_attribute("data-last") or 0)
        # Three more 1 s candles: the last one drawn opened at least 3 s after the history's, and the API holds it.
        assert drawn in later["candles"]["timestamp"] and drawn >= first_last + 3_000
        # Fills are marked on it as they happen (SmaCross 2/3 on 1 s candles trades within seconds).
        _wait_attribute(chart, "data-markers", 1, timeout=60.0)
        page.assert_clean()
        page.close()
    finally:
        api.post(f"/api/v1/runs/{session}/stop", json={})


def test_a_paper_session_started_from_the_form_opens_its_live_view(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    page = WatchedPage(browser_context)
    p = page.open(server.base_url, "backtest")
    expect(p.locator("#risk-fields")).to_be_hidden()  # a backtest has no risk limits
    p.select_option("#strategy", "SmaCross")
    p.fill("#param-fast", "2")
    p.fill("#param-slow", "3")
    p.select_option("#timeframe", "1s")
    p.fill("#cash", "2500")
    p.select_option("#mode", "paper")
    expect(p.locator("#live-fields")).to_be_hidden()
    p.fill("#risk-max_open_orders", "7")
    p.fill("#risk-daily_loss_fraction", "0.2")
    expect(p.locator("#start-run")).to_have_text("Start paper session")
    shoot(page, "backtest-session", DESKTOP)
    p.click("#start-run")
    expect(p.locator("#session-status")).to_have_text("running", timeout=30_000)
    run_id = p.url.rsplit("/", 1)[1]
    try:
        run = api.get(f"/api/v1/runs/{run_id}").json()
        assert (run["mode"], run["timeframe"], run["config"]["strategy_params"]) == (
            "paper",
            "1s",
            {"fast": 2, "slow": 3},
        )
        assert run["config"]["exchange_config"]["risk"] == {"max_open_orders": 7, "daily_loss_fraction": 0.2}
        limits = api.get(f"/api/v1/runs/{run_id}/status").json()["risk"]["limits"]
        assert (limits["max_open_orders"], limits["daily_loss_fraction"], limits["price_band"]) == (7, 0.2, 0.05)
        expect(p.locator('[data-field="balances"] .value')).to_contain_text("USDT")
        assert api.get(f"/api/v1/runs/{run_id}/status").json()["balances"]["USDT"] <= 2500
    finally:
        api.post(f"/api/v1/runs/{run_id}/stop", json={})
    page.assert_clean()
    page.close()


def test_the_form_s_risk_fields_carry_the_server_s_bounds_and_descriptions(
    server: LiveServer, browser_context: Any
) -> None:
    schema = RiskLimits.model_json_schema()["properties"]
    page = WatchedPage(browser_context)
    p = page.open(server.base_url, "backtest")
    p.select_option("#mode", "paper")
    shown = p.locator("#risk-fields input").evaluate_all(
        "els => els.map(e => [e.name, e.min, e.max, e.placeholder, e.title, e.step])"
    )
    assert sorted(name for name, *_ in shown) == sorted(schema)  # capital first on the form
    for name, low, high, placeholder, title, step in shown:
        spec = schema[name]
        number = next((a for a in spec.get("anyOf", [spec]) if a.get("type") in ("number", "integer")), spec)
        assert float(low) == number.get("exclusiveMinimum", number.get("minimum")), name
        assert (float(high) if high else None) == number.get("maximum"), name
        assert placeholder == ("off" if spec.get("default") is None else str(spec["default"])), name
        assert (title, step == "1") == (spec["description"], number["type"] == "integer"), name
    # The browser's own checks: a fraction above 1 is marked before anything is sent.
    p.fill("#risk-price_band", "2")
    p.click("#start-run")
    error = p.locator("#risk-price_band").locator("xpath=ancestor::div[@class='field']//span[@class='field-error']")
    expect(error).to_have_text("At most 1")
    page.assert_clean()
    page.close()


def test_choosing_live_shows_the_stored_credentials_and_asks_before_the_server_s_refusal_lands_on_its_field(
    fake_binance: Any, server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    made = api.post(
        "/api/v1/credentials", json={"name": "main", "exchange": "binance", "apiKey": "k-123456", "secret": "s-abcdef"}
    )
    assert made.status_code == 201, made.text
    page = WatchedPage(browser_context)  # binance's markets come from the suite's fake (listed before the server)
    p = page.open(server.base_url, "backtest")
    # Live is offered only on an exchange live trading can use: not synthetic.
    assert p.is_disabled("#mode-live")
    p.select_option("#exchange", "binance")
    p.select_option("#mode", "live")
    expect(p.locator("#live-fields")).to_be_visible()
    expect(p.locator("#risk-fields")).to_be_visible()
    assert p.locator("#credentials option").all_text_contents() == ["main (binance)"]
    assert "k-123456" not in p.content() and "s-abcdef" not in p.content()
    assert p.is_checked("#sandbox")
    p.fill("#risk-max_position_notional", "500")
    assert_fits(page)
    shoot(page, "backtest-live", DESKTOP)
    p.click("#start-run")
    dialog = p.locator("dialog.confirm")
    expect(dialog).to_contain_text("sends real orders to the test network of binance")
    p.click("dialog.confirm button:not(.danger)")  # Cancel: nothing is sent
    assert api.get("/api/v1/runs", params={"mode": "live"}).json()["total"] == 0
    p.click("#start-run")
    p.click("dialog.confirm button.danger")
    # No capital: the server refuses, and says so next to the capital field.
    expect(p.locator("#message")).to_contain_text("INVALID_LIVE_REQUEST")
    error = p.locator("#risk-capital").locator("xpath=ancestor::div[@class='field']//span[@class='field-error']")
    expect(error).to_contain_text("exchange_config.risk.capital")
    refused = api.get("/api/v1/runs", params={"mode": "live"}).json()["items"]
    assert [r["status"] for r in refused] == ["failed"]
    assert refused[0]["config"]["exchange_config"]["risk"] == {"max_position_notional": 500}
    p.set_viewport_size(PHONE)  # the live and risk fields stay within a phone's width
    assert_fits(page)
    shoot(page, "backtest-live", PHONE)
    # Real money on a server that does not allow it: the dialog says so, and the 403 lands on the sandbox box.
    p.uncheck("#sandbox")
    p.fill("#risk-capital", "100")
    p.click("#start-run")
    expect(dialog).to_contain_text("binance with REAL MONEY")
    p.click("dialog.confirm button.danger")
    expect(p.locator("#message")).to_contain_text("LIVE_TRADING_DISABLED")
    error = p.locator("#sandbox").locator("xpath=ancestor::div[@class='field']//span[@class='field-error']")
    expect(error).to_contain_text("CRACKTRADER_LIVE_TRADING=enabled")
    page.assert_clean(422, 403)
    page.close()


def test_an_order_a_risk_limit_refuses_is_a_closed_order_with_its_reason(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    r = api.post(
        "/api/v1/runs",
        json={
            "mode": "paper",
            "strategy_name": "BuyAndHold",
            "symbols": ["BTC/USDT"],
            "timeframe": "1s",
            "exchange": "synthetic",
            "exchange_config": {"risk": {"max_order_notional": 1.0}},
        },
    )
    session = r.json()["run_id"]
    page = WatchedPage(browser_context)
    try:
        p = page.open(server.base_url, f"sessions/{session}")
        row = p.locator("#closed-orders tbody tr[data-order]").first
        expect(row).to_contain_text("rejected", timeout=30_000)  # BuyAndHold's first order is worth far more than 1
        orders = api.get(f"/api/v1/runs/{session}/results").json()["orders"]
        order = next(o for o in orders if str(o["id"]) == row.get_attribute("data-order"))
        assert (order["status"], order["reason"]) == ("rejected", "refused by a risk limit")
        assert row.locator("td.reason").text_content() == order["reason"]
        page.assert_clean()
        page.close()
    finally:
        api.post(f"/api/v1/runs/{session}/stop", json={})


def test_the_closed_orders_table_shows_a_session_s_filled_orders_with_the_api_s_values(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    session = paper_session(api)
    page = WatchedPage(browser_context)
    try:
        p = page.open(server.base_url, f"sessions/{session}")
        expect(p.locator("#stream-state")).to_have_text("live", timeout=30_000)
        row = p.locator("#closed-orders tbody tr[data-order]").first
        expect(row).to_be_visible(timeout=60_000)  # SmaCross 2/3 on 1 s candles trades within seconds
        order_id = row.get_attribute("data-order")
        orders = api.get(f"/api/v1/runs/{session}/results", params={"limit": 1000}).json()["orders"]
        order = next(o for o in orders if str(o["id"]) == order_id)
        cells = row.locator("td").all_text_contents()
        assert cells[0] == order_id and cells[2:6] == [order["symbol"], order["side"], order["type"], order["status"]]
        assert order["status"] == "filled" and cells[7] == money(order["price"]) and cells[8] == order["reason"]
        assert abs(float(cells[6].replace(",", "")) - order["size"]) < 1e-4
        shoot(page, "session-closed-orders", DESKTOP)
        page.assert_clean()
        page.close()
    finally:
        api.post(f"/api/v1/runs/{session}/stop", json={})


def test_a_position_is_closed_from_the_live_view(server: LiveServer, api: httpx.Client, browser_context: Any) -> None:
    r = api.post(
        "/api/v1/runs",
        json={
            "mode": "paper",
            "strategy_name": "BuyAndHold",
            "symbols": ["BTC/USDT"],
            "timeframe": "1s",
            "exchange": "synthetic",
        },
    )
    session = r.json()["run_id"]
    page = WatchedPage(browser_context)
    try:
        p = page.open(server.base_url, f"sessions/{session}")
        close = p.locator('#positions button:text("Close")')
        expect(close).to_have_count(1, timeout=30_000)  # BuyAndHold buys on its first candle
        p.click('#positions button:text("Close")')
        p.click("dialog.confirm button.danger")
        expect(p.locator("#session-message")).to_have_text("BTC/USDT position closed")
        expect(p.locator("#fills tbody")).to_contain_text("sell", timeout=30_000)  # the closing fill, from the stream
        sells = [t for t in api.get(f"/api/v1/runs/{session}/results").json()["trades"] if t["side"] == "sell"]
        assert sells and sells[0]["reason"]
    finally:
        api.post(f"/api/v1/runs/{session}/stop", json={})
    page.assert_clean()
    page.close()


def test_stored_credentials_are_added_rotated_and_deleted_without_their_secrets_on_the_page(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    page = WatchedPage(browser_context)
    p = page.open(server.base_url, "account")
    expect(p.locator("#whoami")).to_contain_text("Authentication is off")
    p.fill("#cred-name", "main")
    p.select_option("#cred-exchange", "binance")
    p.fill("#cred-apiKey", "KEY-visible-nowhere-1")
    p.fill("#cred-secret", "SECRET-visible-nowhere-1")
    p.click("#cred-form button[type=submit]")
    expect(p.locator('#credentials tr[data-name="main"]')).to_contain_text("binance")
    assert api.get("/api/v1/credentials").json()["credentials"][0]["name"] == "main"
    p.fill("#cred-apiKey", "KEY-visible-nowhere-2")
    p.fill("#cred-secret", "SECRET-visible-nowhere-2")
    p.click('#credentials tr[data-name="main"] button:text("Rotate")')
    p.click("dialog.confirm button.danger")
    expect(p.locator("#account-message")).to_have_text("main rotated")
    assert api.get("/api/v1/credentials").json()["credentials"][0]["rotated_at"] is not None
    html = p.content() + "".join(p.eval_on_selector_all("input", "els => els.map((e) => e.value)"))
    assert "visible-nowhere" not in html  # neither shown nor left in the form
    p.click('#credentials tr[data-name="main"] button:text("Delete")')
    p.click("dialog.confirm button.danger")
    expect(p.locator("#credentials td.empty")).to_have_text("No stored credentials")
    assert api.get("/api/v1/credentials").json()["credentials"] == []
    page.assert_clean()
    page.close()


def test_with_auth_on_a_user_signs_in_makes_an_api_key_and_signs_out(browser_context: Any) -> None:
    # The CLI in its own process (Playwright's sync API holds this thread's event loop), on this test's database.
    made = subprocess.run(
        [sys.executable, "-m", "cracktrader", "users", "create", "alice", "--role", "trader"],
        input=f"{PASSWORD}\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    with LiveServer(auth_mode="on", jwt_secret_key=SECRET) as srv:
        page = WatchedPage(browser_context)
        # Not signed in, a page sends the user to the sign-in form (the browser logs the API's 401 as a failed
        # resource: that one is expected), and back to that page once signed in.
        p = page.open(srv.base_url, "backtest")
        p.wait_for_selector("#login-form")
        p.fill("#username", "alice")
        p.fill("#password", PASSWORD)
        p.click("#sign-in")
        expect(p.locator("#stream-state")).to_have_text("live")  # the stream took the token as its first message
        expect(p.locator("#status-pill")).to_have_text("idle")
        p.click('nav a[data-page="account"]')
        p.click("#sign-out")
        p.wait_for_selector("#login-form")
        p.fill("#username", "alice")
        p.fill("#password", "wrong password")
        p.click("#sign-in")
        expect(p.locator("#login-form .message")).to_contain_text("INVALID")
        p.fill("#password", PASSWORD)
        p.click("#sign-in")
        p.wait_for_selector("#username-shown")
        assert p.text_content("#username-shown") == "alice"
        p.fill("#key-name", "laptop")
        p.click("#apikeys button[type=submit]")
        p.wait_for_selector("#new-key code")
        key = p.text_content("#new-key code")
        with httpx.Client(base_url=srv.base_url) as c:
            assert c.get("/api/v1/auth/me", headers={"X-API-Key": key}).json()["username"] == "alice"
            p.click('#apikeys button:text("Revoke")')
            p.click("dialog.confirm button.danger")
            expect(p.locator('#apikeys tr[data-key="laptop"]')).to_contain_text("revoked")
            assert c.get("/api/v1/auth/me", headers={"X-API-Key": key}).status_code == 401
        p.click("#refresh")
        expect(p.locator("#account-message")).to_have_text("Token refreshed")
        p.click("#sign-out")
        p.wait_for_selector("#login-form")
        unexpected = [e for e in page.errors if "401" not in e]
        assert not unexpected and not p.evaluate("window.__csp"), (unexpected, p.evaluate("window.__csp"))
        page.close()


def test_the_vendored_candle_library_draws_under_the_csp(server: LiveServer, browser_context: Any) -> None:
    page = WatchedPage(browser_context)
    p = page.open(server.base_url, "backtest")
    t0 = 1704067200000
    n = 50
    doc = {
        "symbol": "BTC/USDT",
        "run_range": {"start": "2024-01-01T00:00:00Z", "end": "2024-01-03T02:00:00Z"},
        "start": "2024-01-01T00:00:00Z",
        "end": "2024-01-03T02:00:00Z",
        "bucket_bars": 1,
        "bars": n,
        "candles": {
            "timestamp": [t0 + 3_600_000 * i for i in range(n)],
            "open": [100 + i for i in range(n)],
            "high": [102 + i for i in range(n)],
            "low": [99 + i for i in range(n)],
            "close": [101 + i for i in range(n)],
            "volume": [5.0] * n,
        },
        "indicators": [{"name": "sma_3", "values": [None, None] + [100.0 + i for i in range(n - 2)]}],
        "markers": [
            {
                "side": "long",
                "entry_time": "2024-01-01T10:00:00Z",
                "exit_time": "2024-01-01T20:00:00Z",
                "pnl": 3.0,
                "pnl_pct": 2.5,
                "stop_loss": 95.0,
                "take_profit": 120.0,
            }
        ],
        "markers_total": 1,
    }
    p.evaluate(
        """async (doc) => {
            const el = document.createElement('div'); el.id = 'candle-test'; el.style.width = '600px';
            document.body.append(el);
            const charts = await import('/ui/charts.js');
            await charts.candleChart(el, doc, async () => doc);
        }""",
        doc,
    )
    p.wait_for_selector("#candle-test canvas")
    assert p.get_attribute("#candle-test", "data-candles") == "50"
    page.assert_clean()
    page.close()


def test_the_ui_files_are_served_with_a_strict_csp(server: LiveServer, api: httpx.Client) -> None:
    for path in ("/ui", "/ui/app.js", "/ui/vendor/uplot/uPlot.esm.js", "/ui/metrics-help.json"):
        r = api.get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "unsafe-eval" not in csp
    assert json.loads(api.get("/ui/metrics-help.json").text)["total_return"]["kind"] == "percent"


def test_results_page_draws_candles_with_trades_and_the_api_round_trips_and_breakdowns(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    run_id = backtest(api, start_date="2023-01-01", end_date="2024-03-01")
    chart = api.get(f"/api/v1/runs/{run_id}/candles", params={"max_points": 2000}).json()
    trips = api.get(f"/api/v1/runs/{run_id}/roundtrips", params={"limit": 25}).json()
    by_pnl = api.get(f"/api/v1/runs/{run_id}/roundtrips", params={"limit": 25, "sort": "pnl", "order": "desc"}).json()
    bd = api.get(f"/api/v1/runs/{run_id}/breakdowns").json()
    assert chart["bucket_bars"] > 1 and trips["total"] > 25  # a long run: bucketed candles, several pages
    page = WatchedPage(browser_context)
    p = page.open(server.base_url, f"runs/{run_id}")
    p.wait_for_selector("main[data-data-ready]")
    assert p.evaluate("performance.getEntriesByName('data-ready').length") == 1
    assert p.locator("#candle-chart canvas").count() > 0
    box = p.locator("#candle-chart")
    assert box.get_attribute("data-candles") == str(len(chart["candles"]["timestamp"]))
    assert box.get_attribute("data-bucket-bars") == str(chart["bucket_bars"])
    info = p.text_content("#candle-info")
    assert f"{chart['markers_total']:,} round trips" in info and "sma_10, sma_30" in info
    # Buy and hold on the equity chart: the first close scaled to the initial cash.
    expect(p.locator("#equity-chart .u-legend").first).to_contain_text("Buy & hold")
    hold = p.evaluate(
        """async ([candles, cash]) => (await import('/ui/charts.js')).buyAndHold(
            [candles.timestamp[0] / 1000, candles.timestamp.at(-1) / 1000], candles, cash)""",
        [chart["candles"], bd["initial_cash"]],
    )
    closes = chart["candles"]["close"]
    assert hold == pytest.approx([bd["initial_cash"], bd["initial_cash"] * closes[-1] / closes[0]])
    # Round trips: the server's first page, then sorted by pnl on the server.
    assert p.text_content("#roundtrips .pager-info") == f"1–25 of {trips['total']}"
    first = p.locator("#roundtrips tbody tr").first.locator("td")
    assert first.nth(3).text_content() == f"{trips['items'][0]['entry_price']:,.8f}".rstrip("0").rstrip(".")
    p.click('#roundtrips th[data-key="pnl"]')
    p.click('#roundtrips th[data-key="pnl"]')
    expect(p.locator("#roundtrips")).to_have_attribute("data-loaded", "pnl:desc:0")
    best = p.locator("#roundtrips tbody tr").first.locator("td").nth(7)
    assert best.text_content() == money(by_pnl["items"][0]["pnl"])
    p.click("#roundtrips .pager button:last-child")
    expect(p.locator("#roundtrips .pager-info")).to_have_text(f"26–{min(50, trips['total'])} of {trips['total']}")
    # Breakdowns: per symbol and monthly, as the API computed them.
    row = p.locator("#by-symbol tbody tr").first
    assert row.locator('td[data-key="trades"]').text_content() == str(bd["by_symbol"][0]["trades"])
    assert row.locator('td[data-key="pnl"]').text_content() == money(bd["by_symbol"][0]["pnl"])
    months = p.locator("#monthly tbody tr")
    assert months.count() == len(bd["monthly"])
    first_month = months.nth(0).locator('td[data-key="return_pct"]')
    assert first_month.text_content() == f"{bd['monthly'][0]['return_pct']:.2f} %"
    # Zooming in loads the visible range at full detail from the server.
    p.evaluate("document.querySelector('#candle-chart').scrollIntoView()")
    canvas = p.locator("#candle-chart").bounding_box()
    assert canvas is not None
    p.mouse.move(canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2)
    for _ in range(40):  # each reload (debounced) narrows the buckets until they are single bars
        if box.get_attribute("data-bucket-bars") == "1":
            break
        p.mouse.wheel(0, -400)
        p.wait_for_timeout(250)
    expect(box).to_have_attribute("data-bucket-bars", "1", timeout=15_000)
    shoot(page, "results-zoomed", DESKTOP)
    page.assert_clean()
    page.close()


def test_symbols_are_picked_from_the_markets_search_and_refused_symbols_are_marked_on_the_field(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    markets = api.get("/api/v1/exchanges/synthetic/markets", params={"q": "eth", "limit": 20}).json()
    page = WatchedPage(browser_context)
    p = page.open(server.base_url, "backtest")
    assert p.locator("#symbol-chips .chip").all_text_contents() == ["BTC/USDT×"]
    p.fill("#symbols", "eth")
    options = p.locator("#symbol-options .option")
    expect(options).to_have_count(len(markets["items"]))
    assert options.all_text_contents() == [m["symbol"] for m in markets["items"]]
    expect(p.locator("#symbol-hint")).to_contain_text(f"{markets['total']} markets match")
    p.click('#symbol-options .option[data-symbol="ETH/USDT"]')
    p.click('#symbol-chips .chip[data-symbol="BTC/USDT"] .chip-x')
    # Free text on synthetic (any_symbol): a well-formed BASE/QUOTE is taken, anything else is refused.
    p.fill("#symbols", "xyz/usdt")
    p.press("#symbols", "Enter")
    assert p.locator("#symbol-chips .chip").evaluate_all("els => els.map(e => e.dataset.symbol)") == [
        "ETH/USDT",
        "XYZ/USDT",
    ]
    shoot(page, "backtest-symbols", DESKTOP)
    # Left typed without Enter, a malformed symbol goes to the server: its typed error lands next to the field.
    p.fill("#symbols", "BTCUSDT")
    p.click("#start-run")
    expect(p.locator("#message")).to_contain_text("INVALID_SYMBOL")
    error = p.locator("#symbols").locator("xpath=ancestor::div[@class='field']//span[@class='field-error']")
    expect(error).to_contain_text("BTCUSDT")
    page.assert_clean(400)
    page.close()


def test_a_strategy_s_parameters_are_listed_and_its_check_shows_the_api_s_result(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    body = {
        "symbols": ["BTC/USDT"],
        "timeframe": "1h",
        "exchange": "synthetic",
        "start_date": "2024-01-01",
        "end_date": "2024-03-01",
    }
    expected = api.post("/api/v1/strategies/SmaCross/check", json=body).json()
    page = WatchedPage(browser_context)
    p = page.open(server.base_url, "strategies")
    p.click('#strategy-list tr[data-strategy="SmaCross"] a')
    expect(p.locator("#strategy-detail h2")).to_have_text("SmaCross")
    assert p.text_content('#strategy-params tr[data-param="fast"] td[data-key="value"]') == "10"
    p.click("#run-check")
    expect(p.locator("#check-passed")).to_have_text("passed" if expected["passed"] else "failed", timeout=120_000)
    for check in expected["checks"]:
        row = p.locator(f'#check-result tr[data-check="{check["name"]}"]')
        assert row.locator('td[data-key="compared"]').text_content() == str(check["compared"])
        assert row.locator('td[data-key="differing"]').text_content() == str(check["differing"])
    assert f"{expected['entries']} entries, {expected['exits']} exits" in p.text_content("#check-result")
    shoot(page, "strategies", DESKTOP)
    # A timeframe the API does not know: its typed error lands next to that field.
    p.fill("#check-timeframe", "7x")
    p.click("#run-check")
    expect(p.locator("#check-message")).to_contain_text("INVALID_TIMEFRAME")
    expect(p.locator("#check-timeframe")).to_have_class("invalid")
    page.assert_clean(400, 422)
    page.close()


def test_the_data_page_lists_stored_sets_and_downloads_with_progress_and_cancel(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    page = WatchedPage(browser_context)
    p = page.open(server.base_url, "data")
    expect(p.locator("#candle-sets td.empty")).to_have_text("No stored candles yet")
    p.fill("#dl-symbol", "SOL/USDT")
    p.select_option("#dl-timeframe", "1d")
    p.fill("#dl-start", "2024-01-01")
    p.fill("#dl-end", "2024-02-01")
    p.click("#dl-start-button")
    expect(p.locator("#dl-job-status")).to_have_text("completed", timeout=60_000)
    assert p.get_attribute("#dl-progress", "value") == "1"
    sets = api.get("/api/v1/data/sets").json()["items"]
    row = p.locator("#candle-sets tbody tr").first
    expect(row).to_contain_text("SOL/USDT")
    assert row.locator("td").nth(5).text_content() == f"{sets[0]['count']:,}"
    assert row.locator("td").nth(7).text_content() == str(sets[0]["gaps"])
    # A long download is canceled from the form.
    p.select_option("#dl-timeframe", "1m")
    p.fill("#dl-start", "2015-01-01")
    p.fill("#dl-end", "2024-01-01")
    p.click("#dl-start-button")
    expect(p.locator("#dl-cancel")).to_be_enabled()
    p.click("#dl-cancel")
    expect(p.locator("#dl-job-status")).to_have_text("canceled", timeout=60_000)
    shoot(page, "data", DESKTOP)
    # Over the bar cap: the API's typed error is shown next to the start of the range.
    p.fill("#dl-start", "2000-01-01")
    p.click("#dl-start-button")
    expect(p.locator("#dl-message")).to_contain_text("DOWNLOAD_TOO_LARGE")
    expect(p.locator("#dl-start")).to_have_class("invalid")
    expect(p.locator("#dl-form .field-error").nth(3)).to_contain_text("5,000,000")
    page.assert_clean(422)
    page.close()


def test_the_data_page_follows_a_download_from_the_stream_without_polling_its_job(
    server: LiveServer, api: httpx.Client, browser_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cracktrader.data import service as data_service

    # The download holds after its first chunk until the page has shown it: progress is seen, never raced.
    shown = threading.Event()
    real = data_service.download

    def held(*args: Any, progress: Any, **kwargs: Any) -> Any:
        def report(done: int, total: int) -> None:
            progress(done, total)
            if done >= 100_000:
                shown.wait(60)

        return real(*args, progress=report, **kwargs)

    monkeypatch.setattr(data_service, "download", held)
    server.app.state.downloads.throttle_s = 0.0  # the held chunk's event goes out however soon it follows the first
    page = WatchedPage(browser_context)
    requests: list[tuple[str, str]] = []
    page.page.on("request", lambda r: requests.append((r.method, r.url)))
    p = page.open(server.base_url, "data")
    try:
        p.fill("#dl-symbol", "BTC/USDT")
        p.select_option("#dl-timeframe", "1m")
        p.fill("#dl-start", "2023-07-01")
        p.fill("#dl-end", "2024-01-01")  # 264,960 bars: three chunks
        p.click("#dl-start-button")
        expect(p.locator("#dl-job-status")).to_have_text("running", timeout=60_000)
        expect(p.locator("#dl-status")).to_contain_text("100,000 / 264,960 bars", timeout=60_000)
        assert 0 < float(p.get_attribute("#dl-progress", "value") or 0) < 1
        expect(p.locator("#dl-cancel")).to_be_enabled()
    finally:
        shown.set()
    expect(p.locator("#dl-job-status")).to_have_text("completed", timeout=120_000)
    expect(p.locator("#dl-status")).to_contain_text("264,960 / 264,960 bars")
    assert p.get_attribute("#dl-progress", "value") == "1"
    expect(p.locator("#candle-sets tbody tr").first).to_contain_text("264,960")
    assert [method for method, url in requests if url.endswith("/api/v1/data/downloads")] == ["POST"]
    polls = [url for _, url in requests if "/api/v1/data/downloads/" in url]
    assert polls == []  # the job's progress came from the stream only
    sets = [url for _, url in requests if "/api/v1/data/sets" in url]
    assert len(sets) == 2  # the page's first load and one refresh when the job ended
    page.assert_clean()
    page.close()


def test_the_logs_page_shows_the_server_lines_by_level_and_run(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    run_id = backtest(api)
    doc = api.get("/api/v1/logs", params={"level": "INFO", "limit": 500}).json()
    mine = api.get("/api/v1/logs", params={"run_id": run_id}).json()["items"]
    assert [line["message"] for line in mine] == [f"Run {run_id} started", f"Run {run_id} completed"]
    page = WatchedPage(browser_context)
    p = page.open(server.base_url, "logs")
    expect(p.locator("#log-info")).to_have_text(
        f"{len(doc['items'])} of {doc['total']} lines (the server keeps the last {doc['capacity']})"
    )
    p.fill("#log-run", run_id)
    p.click("#log-refresh")
    expect(p.locator("#log-lines tbody tr")).to_have_count(2)
    shown = p.locator("#log-lines td.log-msg").all_text_contents()
    assert sorted(shown) == sorted(line["message"] for line in mine)
    p.select_option("#log-level", "WARNING")
    p.click("#log-refresh")
    expect(p.locator("#log-lines td.empty")).to_have_text("No lines")
    page.assert_clean()
    page.close()


def test_with_auth_on_the_logs_page_shows_the_api_s_403_to_a_trader(browser_context: Any) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "cracktrader", "users", "create", "bob", "--role", "trader"],
        input=f"{PASSWORD}\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    with LiveServer(auth_mode="on", jwt_secret_key=SECRET) as srv:
        page = WatchedPage(browser_context)
        p = page.open(srv.base_url, "logs")
        p.wait_for_selector("#login-form")
        p.fill("#username", "bob")
        p.fill("#password", PASSWORD)
        p.click("#sign-in")
        expect(p.locator("#log-message")).to_contain_text("FORBIDDEN")
        page.assert_clean(401, 403)
        page.close()


METRIC_KINDS: dict[str, str] = {
    k: v["kind"]
    for k, v in json.loads(
        (UI_DIR / "metrics-help.json").read_text(encoding="utf-8")  # what format.js formats by
    ).items()
}


def shown_metric(key: str, v: float | None) -> str:
    """A metric as format.js shows it (the kinds of the sweep's default metrics)."""
    if v is None:
        return "–"
    kind = METRIC_KINDS[key]
    if kind == "percent":
        return percent(v)
    if kind == "money":
        return money(v)
    if kind == "count":
        return str(v) if float(v).is_integer() else f"{v:,.4f}"
    assert kind == "number", kind
    return f"{v:,.2f}"


def sweep_range(p: Any, name: str, start: int, end: int, step: int) -> None:
    """Switch parameter `name` of the sweep form to a range and fill it."""
    p.select_option(f"#param-{name}-mode", "range")
    p.fill(f"#param-{name}-start", str(start))
    p.fill(f"#param-{name}-end", str(end))
    p.fill(f"#param-{name}-step", str(step))


def test_a_sweep_started_from_the_form_shows_its_rows_and_heatmap_and_a_row_opens_as_a_backtest(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    page = WatchedPage(browser_context)
    p = page.open(server.base_url, "sweeps")
    p.select_option("#strategy", "SmaCross")
    p.wait_for_selector("#param-fast-mode")
    expect(p.locator("#combinations")).to_have_text("1 combination")
    sweep_range(p, "fast", 5, 10, 5)
    expect(p.locator("#combinations")).to_have_text("2 combinations")
    sweep_range(p, "slow", 20, 30, 10)
    expect(p.locator("#combinations")).to_have_text("4 combinations")  # the 2 x 2 grid, counted before it starts
    p.fill("#start", "2024-01-01")
    p.fill("#end", "2024-02-01")
    p.click("#start-sweep")
    expect(p.locator("#sweep-status")).to_have_text("completed", timeout=120_000)
    expect(p.locator("#sweep-done")).to_have_text(" 4 / 4 combinations")
    p.wait_for_selector("main[data-data-ready] #heatmap .heatmap-canvas")
    sweep_id = p.text_content("#sweep-id")
    assert p.evaluate("location.hash") == f"#/sweeps/{sweep_id}"
    doc = api.get(f"/api/v1/sweeps/{sweep_id}").json()
    assert (doc["status"], doc["request"]["grid"]) == (
        "completed",
        {"fast": {"start": 5, "end": 10, "step": 5}, "slow": {"start": 20, "end": 30, "step": 10}},
    )
    rows = api.get(f"/api/v1/sweeps/{sweep_id}/results").json()["items"]
    assert len(rows) == 4
    # The table: one line per row, best first, with the API's parameters and metrics as format.js shows them.
    lines = p.locator("#sweep-rows tbody tr")
    expect(lines).to_have_count(4)
    for i, row in enumerate(rows):
        line = lines.nth(i)
        assert line.locator('td[data-key="rank"]').text_content() == str(row["rank"])
        assert line.locator('td[data-key="p.fast"]').text_content() == str(row["params"]["fast"])
        assert line.locator('td[data-key="p.slow"]').text_content() == str(row["params"]["slow"])
        for metric in doc["metrics"]:
            cell = line.locator(f'td[data-key="m.{metric}"]').text_content()
            assert cell == shown_metric(metric, row["metrics"][metric]), (metric, row)
    # Sorted by total return (lowest first) on a click.
    p.click('#sweep-rows th[data-key="m.total_return"]')
    lowest = min(rows, key=lambda r: r["metrics"]["total_return"])
    assert lines.first.locator('td[data-key="rank"]').text_content() == str(lowest["rank"])
    # The heatmap: colours drawn, a legend of the API's extremes, the value of the cell under the pointer.
    colours = p.evaluate(
        """() => { const c = document.querySelector('#heatmap .heatmap-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; const seen = new Set();
        for (let i = 0; i < d.length; i += 16) { seen.add(d[i] << 16 | d[i + 1] << 8 | d[i + 2]); }
        return seen.size; }"""
    )
    assert colours > 4, colours
    sharpe = {(r["params"]["fast"], r["params"]["slow"]): r["metrics"]["sharpe_ratio"] for r in rows}
    assert p.text_content("#heatmap .heatmap-min") == shown_metric("sharpe_ratio", min(sharpe.values()))
    assert p.text_content("#heatmap .heatmap-max") == shown_metric("sharpe_ratio", max(sharpe.values()))
    box = p.locator("#heatmap .heatmap-canvas").bounding_box()
    assert box is not None
    p.mouse.move(box["x"] + box["width"] - 20, box["y"] + 20)  # the top right cell: the largest fast and slow
    expect(p.locator("#heatmap .heatmap-hover")).to_have_text(
        f"fast 10 · slow 30: {shown_metric('sharpe_ratio', sharpe[(10, 30)])}"
    )
    p.select_option("#hm-metric", "total_return")
    returns = [r["metrics"]["total_return"] for r in rows]
    expect(p.locator("#heatmap .heatmap-max")).to_have_text(percent(max(returns)))
    expect(p.locator(f'#sweeps a[href="#/sweeps/{sweep_id}"]')).to_have_count(1)  # in the past sweeps
    assert_fits(page)
    shoot(page, "sweeps", DESKTOP)
    # A row as a backtest: its results page opens once the run completed, with the row's parameters.
    best = rows[0]
    p.click('#sweep-rows button[data-rank="1"]')
    p.wait_for_url("**/ui#/runs/*", timeout=120_000)
    p.wait_for_selector("#equity-chart canvas")
    run_id = p.evaluate("location.hash").removeprefix("#/runs/")
    run = api.get(f"/api/v1/runs/{run_id}").json()
    assert run["status"] == "completed"
    swept = {k: best["params"][k] for k in ("fast", "slow")}
    assert {k: run["config"]["strategy_params"][k] for k in ("fast", "slow")} == swept
    assert p.text_content("#final-value") == money(run["final_value"])
    page.assert_clean()
    page.close()
    # The same sweep at phone width: nothing overflows, the heatmap is drawn.
    phone = WatchedPage(browser_context, PHONE)
    q = phone.open(server.base_url, f"sweeps/{sweep_id}")
    q.wait_for_selector("main[data-data-ready] #heatmap .heatmap-canvas")
    # The form starts from the opened sweep's request.
    assert (q.input_value("#strategy"), q.input_value("#param-fast-mode"), q.input_value("#param-slow-end")) == (
        "SmaCross",
        "range",
        "30",
    )
    assert (q.input_value("#start"), q.input_value("#end"), q.text_content("#combinations")) == (
        "2024-01-01",
        "2024-02-01",
        "4 combinations",
    )
    assert_fits(phone)
    shoot(phone, "sweeps", PHONE)
    # Another row while the slot still holds the first one's completed run: the slot is reset, the row runs.
    assert api.get("/api/v1/status").json()["status"] == "completed"
    q.click('#sweep-rows button[data-rank="2"]')
    q.wait_for_url(lambda url: "#/runs/" in url and not url.endswith(run_id), timeout=120_000)
    q.wait_for_selector("#equity-chart canvas")
    second = api.get(f"/api/v1/runs/{q.evaluate('location.hash').removeprefix('#/runs/')}").json()
    assert second["status"] == "completed"
    assert {k: second["config"]["strategy_params"][k] for k in ("fast", "slow")} == rows[1]["params"]
    assert api.get(f"/api/v1/runs/{run_id}").json()["status"] == "completed"  # the first one kept in the history
    phone.assert_clean()
    phone.close()


def test_a_running_sweep_shows_progress_and_eta_from_the_stream_and_is_cancelled_from_the_page(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    page = WatchedPage(browser_context)
    reads: list[str] = []
    page.page.on("request", lambda r: reads.append(r.url) if "/api/v1/sweeps/" in r.url else None)
    p = page.open(server.base_url, "sweeps")
    p.select_option("#strategy", "SlowStrategy")  # at least 5 ms a bar: 40 combinations x 168 bars take 33 s or more
    p.wait_for_selector("#param-trade_every-mode")
    sweep_range(p, "trade_every", 0, 39, 0)
    expect(p.locator("#param-trade_every-error")).to_have_text("The step must be more than 0")
    sweep_range(p, "trade_every", 0, 20_000, 1)
    expect(p.locator("#combinations")).to_have_text("20,001 combinations")
    p.click("#start-sweep")  # more than the server's limit (10,000): refused, and said why
    expect(p.locator("#message")).to_contain_text("SWEEP_TOO_LARGE: The grid has 20,001 combinations")
    sweep_range(p, "trade_every", 0, 39, 1)
    expect(p.locator("#combinations")).to_have_text("40 combinations")
    p.check("#param-busy-opt-0")  # busy: true as well as false
    expect(p.locator("#combinations")).to_have_text("80 combinations")
    p.uncheck("#param-busy-opt-0")
    p.uncheck("#param-busy-opt-1")
    expect(p.locator("#combinations")).to_have_text("Fix the fields marked in red to count the combinations")
    p.check("#param-busy-opt-1")
    p.fill("#start", "2024-01-01")
    p.fill("#end", "2024-01-08")
    p.click("#start-sweep")
    expect(p.locator("#sweep-status")).to_have_text("running", timeout=60_000)
    expect(p.locator("#sweep-eta")).to_contain_text("ETA", timeout=60_000)
    sweep_id = p.text_content("#sweep-id")
    assert api.get(f"/api/v1/sweeps/{sweep_id}").json()["status"] == "running"
    p.click("#cancel-sweep")
    expect(p.locator("#sweep-status")).to_have_text("cancelled", timeout=30_000)
    p.wait_for_selector("main[data-data-ready] #sweep-rows")
    doc = api.get(f"/api/v1/sweeps/{sweep_id}").json()
    assert doc["status"] == "cancelled" and doc["evaluated"] < 40
    expect(p.locator("#sweep-rows .pager-info")).to_have_text(
        f"{1 if doc['rows'] else 0}–{min(25, doc['rows'])} of {doc['rows']}"
    )
    # Progress came from the stream: the page read the sweep itself only when it ended (and cancelled it once).
    assert len([u for u in reads if u.endswith(sweep_id)]) <= 2, reads
    page.assert_clean(422)
    page.close()


def test_a_preset_is_swept_as_its_class_with_its_values_fixed(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    made = api.post(
        "/api/v1/strategies", json={"name": "sma-7", "base_strategy": "SmaCross", "parameters": {"fast": 7}}
    )
    assert made.status_code == 201, made.text
    page = WatchedPage(browser_context)
    p = page.open(server.base_url, "sweeps")
    p.select_option("#strategy", "sma-7")
    expect(p.locator("#param-fast")).to_have_value("7")  # the preset's value, fixed
    sweep_range(p, "slow", 10, 40, 5)
    p.select_option("#param-stop_loss-mode", "range")
    p.fill("#param-stop_loss-start", "0.02")
    p.fill("#param-stop_loss-end", "0.1")
    p.fill("#param-stop_loss-step", "0.02")
    expect(p.locator("#combinations")).to_have_text("35 combinations")
    p.fill("#start", "2024-01-01")
    p.fill("#end", "2024-02-01")
    p.click("#start-sweep")
    expect(p.locator("#sweep-status")).to_have_text("completed", timeout=120_000)
    p.wait_for_selector("main[data-data-ready] #heatmap .heatmap-canvas")
    doc = api.get(f"/api/v1/sweeps/{p.text_content('#sweep-id')}").json()
    assert (doc["strategy_name"], doc["request"]["strategy_params"], doc["rows"]) == ("SmaCross", {"fast": 7}, 35)
    assert doc["request"]["grid"] == {
        "slow": {"start": 10, "end": 40, "step": 5},
        "stop_loss": {"start": 0.02, "end": 0.1, "step": 0.02},
    }
    expect(p.locator("#sweep-rows .pager-info")).to_have_text("1–25 of 35")
    p.click("#sweep-rows .pager button:text('Next ›')")
    expect(p.locator("#sweep-rows .pager-info")).to_have_text("26–35 of 35")
    shoot(page, "sweeps-preset", DESKTOP)
    page.assert_clean()
    page.close()


def test_the_sweep_form_counts_a_range_s_values_as_the_server_expands_it(
    server: LiveServer, browser_context: Any
) -> None:
    ranges = [(5, 50, 5), (0.1, 0.3, 0.1), (0.02, 0.1, 0.02), (1, 10, 3), (0.5, 0.5, 0.1), (0, 1, 0.05), (2, 1, 1)]
    page = WatchedPage(browser_context)
    p = page.open(server.base_url, "sweeps")
    counted = p.evaluate(
        "async (rs) => { const f = await import('/ui/schemaform.js'); return rs.map((r) => f.rangeCount(...r)); }",
        ranges,
    )
    expanded = [len(parse_range(f"{a}:{b}:{s}")) if b >= a else 0 for a, b, s in ranges]
    assert counted == expanded == [10, 3, 5, 4, 1, 21, 0]
    page.assert_clean()
    page.close()


def shown_param(v: Any) -> str:
    """A parameter value as format.js's `param` shows it."""
    return "off" if v is None else str(v)


def shown_span(span: dict[str, Any]) -> str:
    """A report span's dates as the walk-forward page shows them (format.js's `time`, to the minute)."""
    short = [d.replace("T", " ").removesuffix("Z")[:16] for d in (span["start_date"], span["end_date"])]
    return f"{short[0]} → {short[1]}"


def fill_walkforward_form(p: Any) -> None:
    """SmaCross over fast 5, 10 and slow 20, 30 (4 combinations) on January 2024's synthetic 1 h bars."""
    p.select_option("#strategy", "SmaCross")
    p.wait_for_selector("#param-fast-mode")
    sweep_range(p, "fast", 5, 10, 5)
    sweep_range(p, "slow", 20, 30, 10)
    expect(p.locator("#combinations")).to_have_text("4 combinations")
    p.fill("#start", "2024-01-01")
    p.fill("#end", "2024-02-01")


def test_a_walk_forward_started_from_the_form_shows_the_api_s_windows_and_the_stitched_equity(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    page = WatchedPage(browser_context)
    page.page.on("request", lambda r: reads.append(r.url) if "/api/v1/walkforwards/" in r.url else None)
    reads: list[str] = []
    p = page.open(server.base_url, "walkforward")
    fill_walkforward_form(p)
    # A train window longer than the range: the API's 422 is shown on the train field, nothing starts.
    p.fill("#wf-train", "1000")
    p.click("#start-walkforward")
    expect(p.locator("#message")).to_contain_text("INVALID_WINDOWS")
    expect(p.locator("#wf-train")).to_have_class("invalid")
    assert api.get("/api/v1/walkforwards").json()["total"] == 0
    # 744 bars: train 240 bars, test 5 days (120 bars) make 4 windows.
    p.fill("#wf-train", "240")
    p.fill("#wf-test", "5d")
    p.fill("#wf-purge", "2")
    p.select_option("#wf-metric", "total_return")
    p.click("#start-walkforward")
    expect(p.locator("#wf-status")).to_have_text("completed", timeout=120_000)
    expect(p.locator("#wf-done")).to_have_text(" 4 / 4 windows")
    expect(p.locator("#wf-train")).not_to_have_class("invalid")  # the accepted request unmarked it
    p.wait_for_selector("main[data-data-ready] #wf-equity canvas")
    wf_id = p.text_content("#wf-id")
    assert p.evaluate("location.hash") == f"#/walkforward/{wf_id}"
    doc = api.get(f"/api/v1/walkforwards/{wf_id}").json()
    assert (doc["request"]["train"], doc["request"]["test"], doc["request"]["purge"]) == (240, "5d", 2)
    grid = {"fast": {"start": 5, "end": 10, "step": 5}, "slow": {"start": 20, "end": 30, "step": 10}}
    assert doc["request"]["grid"] == grid
    report = doc["report"]
    assert (report["metric"], report["train"], report["test"], len(report["windows"])) == ("total_return", 240, 120, 4)
    # The windows table: the API's ranges, chosen parameters and metrics as format.js shows them.
    lines = p.locator("#wf-windows-table tbody tr")
    expect(lines).to_have_count(4)
    for i, w in enumerate(report["windows"]):
        line = lines.nth(i)
        assert line.locator('td[data-key="index"]').text_content() == str(w["index"])
        assert line.locator('td[data-key="train"]').text_content() == shown_span(w["train"])
        assert line.locator('td[data-key="test"]').text_content() == shown_span(w["test"])
        for k in ("fast", "slow"):
            assert line.locator(f'td[data-key="p.{k}"]').text_content() == shown_param(w["params"][k])
        assert line.locator('td[data-key="in_sample"]').text_content() == shown_metric("total_return", w["in_sample"])
        for m in ("total_return", "sharpe_ratio", "max_drawdown", "total_trades"):
            cell = line.locator(f'td[data-key="m.{m}"]').text_content()
            assert cell == shown_metric(m, w["out_of_sample"][m]), (m, w)
    # The stitched curve: drawn, with its metrics.
    stitched = report["stitched"]
    assert len(stitched["equity"]) > 0
    shown_return = p.text_content('#metrics [data-metric="total_return"] .value')
    assert shown_return == percent(stitched["metrics"]["total_return"])
    assert p.locator("#wf-equity canvas").count() >= 2  # equity and drawdown
    expect(p.locator(f'#walkforwards a[href="#/walkforward/{wf_id}"]')).to_have_count(1)  # in the past ones
    # Progress came from the stream: the page read the walk-forward itself only once, when it ended.
    assert len([u for u in reads if u.endswith(wf_id)]) <= 1, reads
    assert_fits(page)
    shoot(page, "walkforward", DESKTOP)
    page.assert_clean(422)
    page.close()
    # Opened at phone width: the form starts from its request, nothing overflows, the chart is drawn.
    phone = WatchedPage(browser_context, PHONE)
    q = phone.open(server.base_url, f"walkforward/{wf_id}")
    q.wait_for_selector("main[data-data-ready] #wf-equity canvas")
    assert (q.input_value("#wf-train"), q.input_value("#wf-test"), q.input_value("#wf-metric")) == (
        "240",
        "5d",
        "total_return",
    )
    assert q.text_content("#combinations") == "4 combinations"
    expect(q.locator("#wf-windows-table tbody tr")).to_have_count(4)
    assert_fits(phone)
    shoot(phone, "walkforward", PHONE)
    phone.assert_clean()
    phone.close()


def test_a_cpcv_started_from_the_form_shows_the_api_s_paths_and_splits(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    page = WatchedPage(browser_context)
    p = page.open(server.base_url, "walkforward")
    fill_walkforward_form(p)
    p.select_option("#wf-scheme", "cpcv")
    expect(p.locator("#wf-train")).to_be_hidden()
    p.fill("#wf-folds", "4")
    p.fill("#wf-test-folds", "2")
    p.fill("#wf-embargo", "3")
    p.click("#start-walkforward")
    expect(p.locator("#wf-status")).to_have_text("completed", timeout=120_000)
    expect(p.locator("#wf-done")).to_have_text(" 6 / 6 splits")  # 4 folds, 2 tested in each split
    p.wait_for_selector("main[data-data-ready] #wf-paths")
    doc = api.get(f"/api/v1/walkforwards/{p.text_content('#wf-id')}").json()
    assert (doc["kind"], doc["request"]["cpcv"], doc["request"]["embargo"]) == (
        "cpcv",
        {"n_folds": 4, "n_test_folds": 2},
        3,
    )
    report = doc["report"]
    paths = p.locator("#wf-paths tbody tr")
    expect(paths).to_have_count(len(report["paths"]))
    assert len(report["paths"]) == 3
    for i, path in enumerate(report["paths"]):
        line = paths.nth(i)
        assert line.locator('td[data-key="splits"]').text_content() == ", ".join(map(str, path["splits"]))
        for m in ("sharpe_ratio", "total_return", "max_drawdown", "total_trades"):
            assert line.locator(f'td[data-key="m.{m}"]').text_content() == shown_metric(m, path["metrics"][m])
    splits = p.locator("#wf-splits tbody tr")
    expect(splits).to_have_count(6)
    for i, split in enumerate(report["splits"]):
        line = splits.nth(i)
        assert line.locator('td[data-key="p.fast"]').text_content() == shown_param(split["params"]["fast"])
        in_sample = line.locator('td[data-key="in_sample"]').text_content()
        assert in_sample == shown_metric("sharpe_ratio", split["in_sample"])
    expect(p.locator("#wf-folds-table tbody tr")).to_have_count(4)
    assert_fits(page)
    shoot(page, "walkforward-cpcv", DESKTOP)
    page.assert_clean()
    page.close()


def test_a_running_walk_forward_shows_progress_and_eta_from_the_stream_and_is_cancelled_from_the_page(
    server: LiveServer, api: httpx.Client, browser_context: Any
) -> None:
    page = WatchedPage(browser_context)
    reads: list[str] = []
    page.page.on("request", lambda r: reads.append(r.url) if "/api/v1/walkforwards/" in r.url else None)
    p = page.open(server.base_url, "walkforward")
    p.select_option("#strategy", "SlowStrategy")  # at least 5 ms a bar: about 1 s a window of 4 combinations
    p.wait_for_selector("#param-trade_every-mode")
    sweep_range(p, "trade_every", 0, 3, 1)
    p.fill("#start", "2024-01-01")
    p.fill("#end", "2024-01-15")
    p.fill("#wf-train", "48")
    p.fill("#wf-test", "24")  # 336 bars: 12 windows
    p.click("#start-walkforward")
    expect(p.locator("#wf-status")).to_have_text("running", timeout=60_000)
    expect(p.locator("#wf-eta")).to_contain_text("ETA", timeout=60_000)  # after the first window
    wf_id = p.text_content("#wf-id")
    assert api.get(f"/api/v1/walkforwards/{wf_id}").json()["status"] == "running"
    p.click("#cancel-walkforward")
    expect(p.locator("#wf-status")).to_have_text("cancelled", timeout=30_000)
    p.wait_for_selector("main[data-data-ready] #wf-error")
    expect(p.locator("#wf-error")).to_have_text("Cancelled: no report")
    doc = api.get(f"/api/v1/walkforwards/{wf_id}").json()
    assert (doc["status"], doc["report"]) == ("cancelled", None)
    assert 1 <= doc["progress"]["done"] < 12
    expect(p.locator("#wf-done")).to_have_text(f" {doc['progress']['done']} / 12 windows")
    assert p.locator("#cancel-walkforward").is_disabled()
    # Progress came from the stream: the page read the walk-forward only when it ended (and cancelled it once).
    assert len([u for u in reads if u.endswith(wf_id)]) <= 2, reads
    page.assert_clean()
    page.close()
