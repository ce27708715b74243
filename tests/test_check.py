"""`cracktrader check`, `POST /api/v1/strategies/{ref}/check` and the SDK's `check_strategy`, end to end.

Built-ins pass both checks; user strategies that read the future (`np.roll(close, -2)`), declare too short a
`warmup()`, or decide on their whole history through `ctx.bars(symbol)` fail with the bar and time named.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from typer.testing import CliRunner

from auth_support import auth_client, bearer
from cracktrader.cli import app
from cracktrader.client import (
    AsyncCrackTraderAPI,
    CheckResult,
    CheckTooLargeError,
    CrackTraderAPI,
    UnknownStrategyError,
    ValidationError,
)
from cracktrader.settings import get_settings
from web_support import LiveServer, app_client

pytestmark = pytest.mark.anyio
runner = CliRunner()
START = datetime(2024, 1, 1, tzinfo=UTC)
YEAR = ["--exchange", "synthetic", "--start", "2024-01-01", "--end", "2025-01-01"]
BODY = {
    "symbols": ["BTC/USDT"],
    "timeframe": "1h",
    "start_date": "2024-01-01",
    "end_date": "2025-01-01",
    "exchange": "synthetic",
}
# 2024 in one-minute bars: 527,040, over the 200,000 a check covers.
MINUTES_2024 = {**BODY, "timeframe": "1m"}
CHECK = "/api/v1/strategies/{}/check"
USER_STRATEGIES = '''"""Strategies that `cracktrader check` must fail, one way each."""

import numpy as np

from cracktrader.engine.strategy import Signals, Strategy
from cracktrader.strategies.builtin import SmaCross


class PeeksAhead(Strategy):
    """Buys when the close two bars ahead is higher: look-ahead."""

    def signals(self, bars):
        future = np.roll(bars.close, -2)
        return Signals(entries=future > bars.close, exits=future < bars.close)


class ShortWarmup(SmaCross):
    """SmaCross whose warmup() is one bar short: a cross compares two bars of the slow SMA."""

    def warmup(self):
        return self.params.slow


class AllTimeHigh(Strategy):
    """Buys a close at the all-time high of everything it was given; sells 3% below that high."""

    def warmup(self):
        return 50

    def on_bar(self, ctx):
        for symbol in ctx.symbols:
            close = ctx.bars(symbol).close
            top = np.maximum.accumulate(close)[-1]
            if ctx.position(symbol) == 0.0 and close[-1] == top:
                ctx.buy(symbol, fraction=1.0)
            elif ctx.position(symbol) > 0.0 and close[-1] < 0.97 * top:
                ctx.sell(symbol)
'''


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def user_strategies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A strategy folder holding USER_STRATEGIES, set as CRACKTRADER_STRATEGY_DIR."""
    folder = tmp_path / "strats"
    folder.mkdir()
    (folder / "unsafe.py").write_text(USER_STRATEGIES)
    monkeypatch.setenv("CRACKTRADER_STRATEGY_DIR", str(folder))
    get_settings.cache_clear()
    return folder


def _cli_json(*args: str, exit_code: int = 0) -> dict[str, Any]:
    result = runner.invoke(app, ["check", *args, *YEAR, "--json"])
    assert result.exit_code == exit_code, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def _check(doc: dict[str, Any], name: str) -> dict[str, Any]:
    (item,) = [c for c in doc["checks"] if c["name"] == name]
    return item


def _bar_time(bar: int) -> str:
    """The open time of hourly bar `bar` of 2024, as the document writes it."""
    return (START + timedelta(hours=bar)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _assert_fails_at_a_named_bar(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """`doc` failed check `name`, whose first difference names a bar of the data, its time and two decisions."""
    item = _check(doc, name)
    assert doc["passed"] is False and item["passed"] is False and item["differing"] >= 1
    first = item["first_difference"]
    assert 0 <= first["bar"] < doc["bars"] and first["time"] == _bar_time(first["bar"])
    assert first["symbol"] == "BTC/USDT" and first["expected"] != first["found"]
    return dict(first)


# CLI ---------------------------------------------------------------------------------------------------------
def test_check_of_a_builtin_passes_and_prints_a_row_per_check() -> None:
    result = runner.invoke(app, ["check", "SmaCross", *YEAR])
    assert result.exit_code == 0, result.output
    assert "SmaCross (vectorized) on BTC/USDT 1h synthetic: 8,784 bars" in result.stdout
    assert "window 31 bars" in result.stdout
    assert re.search(r"look-ahead\s*│\s*pass\s*│", result.stdout), result.stdout
    assert re.search(r"window\s*│\s*pass\s*│", result.stdout), result.stdout
    assert "FAIL" not in result.stdout


@pytest.mark.parametrize(("strategy", "style"), [("SmaCross", "vectorized"), ("SmaCrossEvents", "event")])
def test_check_json_of_a_builtin_is_a_passing_document(strategy: str, style: str) -> None:
    doc = _cli_json(strategy)
    assert (doc["strategy"], doc["style"], doc["passed"]) == (strategy, style, True)
    assert [c["name"] for c in doc["checks"]] == ["look_ahead", "window"]
    assert all(c["passed"] and c["differing"] == 0 and c["first_difference"] is None for c in doc["checks"])
    assert (doc["bars"], doc["window"], doc["symbols"], doc["exchange"]) == (8784, 31, ["BTC/USDT"], "synthetic")
    assert (doc["start"], doc["end"]) == ("2024-01-01T00:00:00Z", "2024-12-31T23:00:00Z")
    assert doc["entries"] >= 50 and doc["exits"] >= 50  # a strategy that never trades would pass vacuously
    assert _check(doc, "window")["compared"] == 8784


def test_check_takes_parameters_as_backtest_does() -> None:
    doc = _cli_json("SmaCross", "--param", "fast=5", "--param", "slow=40")
    assert doc["parameters"] == {"size": 1.0, "stop_loss": None, "take_profit": None, "fast": 5, "slow": 40}
    assert doc["window"] == 41 and doc["passed"] is True


def test_signals_reading_two_bars_ahead_fail_the_look_ahead_check_with_exit_1(user_strategies: Path) -> None:
    doc = _cli_json("PeeksAhead", exit_code=1)
    first = _assert_fails_at_a_named_bar(doc, "look_ahead")
    # Only the two bars before a changed future read it.
    assert re.search(r"after changing the bars after bar (\d+)", first["found"])
    changed_after = int(re.search(r"after bar (\d+)", first["found"]).group(1))  # type: ignore[union-attr]
    assert changed_after - 1 <= first["bar"] <= changed_after

    table = runner.invoke(app, ["check", "PeeksAhead", *YEAR])
    assert table.exit_code == 1
    assert re.search(r"look-ahead\s*│\s*FAIL", table.stdout) and f"bar {first['bar']}" in table.stdout


def test_a_warmup_one_bar_short_fails_the_window_check(user_strategies: Path) -> None:
    doc = _cli_json("ShortWarmup", exit_code=1)
    assert doc["window"] == 30 and _check(doc, "look_ahead")["passed"] is True
    first = _assert_fails_at_a_named_bar(doc, "window")
    assert first["found"].endswith("(on a window of 30 bars)")


def test_an_event_strategy_deciding_on_its_whole_history_fails_the_window_check(user_strategies: Path) -> None:
    doc = _cli_json("AllTimeHigh", exit_code=1)
    assert doc["style"] == "event" and doc["entries"] >= 1
    assert _check(doc, "look_ahead")["passed"] is True
    first = _assert_fails_at_a_named_bar(doc, "window")
    # A 50-bar "all-time" high is reached far more often than the real one.
    assert first["expected"] == "no order" and first["found"].startswith("buy BTC/USDT size=all")


def test_check_over_the_bar_limit_is_refused_in_one_line_with_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRACKTRADER_MAX_CHECK_BARS", "1000")
    get_settings.cache_clear()
    result = runner.invoke(app, ["check", "SmaCross", *YEAR])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "error: A check covers at most 1,000 bars per symbol (CRACKTRADER_MAX_CHECK_BARS); this one asks for 8,784: "
        "shorten the range or use a longer timeframe"
    ]


# HTTP --------------------------------------------------------------------------------------------------------
async def test_http_check_of_a_builtin_answers_the_cli_document() -> None:
    cli = _cli_json("SmaCross")
    async with app_client() as c:
        r = await c.post(CHECK.format("SmaCross"), json=BODY)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["passed"] is True and doc["seconds"] > 0
    assert {k: v for k, v in doc.items() if k != "seconds"} == {k: v for k, v in cli.items() if k != "seconds"}


async def test_http_check_of_a_stored_preset_by_name_and_by_id_uses_its_parameters() -> None:
    preset = {"name": "Fast SMA", "base_strategy": "SmaCross", "parameters": {"fast": 5, "slow": 20}}
    async with app_client() as c:
        created = await c.post("/api/v1/strategies", json=preset)
        assert created.status_code == 201, created.text
        by_name = await c.post(CHECK.format("Fast SMA"), json=BODY)
        by_id = await c.post(CHECK.format(created.json()["id"]), json=BODY)
        overridden = await c.post(CHECK.format("Fast SMA"), json={**BODY, "strategy_params": {"slow": 25}})
    for r in (by_name, by_id, overridden):
        assert r.status_code == 200, r.text
        assert r.json()["strategy"] == "Fast SMA" and r.json()["passed"] is True
    assert (by_name.json()["parameters"]["fast"], by_name.json()["parameters"]["slow"], by_name.json()["window"]) == (
        5,
        20,
        21,
    )
    assert by_id.json()["checks"] == by_name.json()["checks"]
    assert (overridden.json()["parameters"]["slow"], overridden.json()["window"]) == (25, 26)


async def test_http_check_of_a_failing_user_strategy_is_200_with_passed_false(user_strategies: Path) -> None:
    async with app_client(get_settings()) as c:
        r = await c.post(CHECK.format("PeeksAhead"), json=BODY)
    assert r.status_code == 200, r.text
    _assert_fails_at_a_named_bar(r.json(), "look_ahead")


async def test_http_check_over_the_bar_limit_is_refused_before_any_candle_is_loaded() -> None:
    # binance is not reachable from the tests (loopback only): a 422, not a data error, proves nothing was loaded.
    async with app_client() as c:
        r = await c.post(CHECK.format("SmaCross"), json={**MINUTES_2024, "exchange": "binance"})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"]["code"] == "CHECK_TOO_LARGE" and body["status_code"] == 422
    assert body["error"]["details"] == {"bars": 527_040, "max_bars": 200_000}
    assert "at most 200,000 bars per symbol" in body["error"]["message"]
    assert body["path"] == CHECK.format("SmaCross")


async def test_http_check_of_an_unknown_strategy_answers_as_a_backtest_of_it_does() -> None:
    async with app_client() as c:
        check = await c.post(CHECK.format("Nope"), json=BODY)
        backtest = await c.post("/api/v1/run/backtest", json={**BODY, "strategy_name": "Nope"})
        missing_id = await c.post(CHECK.format(999), json=BODY)
    assert check.status_code == backtest.status_code == 400
    assert check.json()["error"] == backtest.json()["error"]
    assert check.json()["error"]["code"] == "UNKNOWN_STRATEGY"
    assert "SmaCross" in check.json()["error"]["details"]["available"]
    assert missing_id.status_code == 404 and missing_id.json()["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("content", "loc"),
    [
        (json.dumps({**BODY, "initial_cash": 100}), ["body", "initial_cash"]),
        ('{"strategy_params": {"fast": NaN}, "exchange": "synthetic"}', ["body", "strategy_params", "fast"]),
        (json.dumps({**BODY, "symbols": "BTC/USDT"}), ["body", "symbols"]),
    ],
    ids=["unknown_field", "nan", "string_for_list"],
)
async def test_http_check_with_a_bad_body_answers_422_with_the_error_envelope(content: str, loc: list[str]) -> None:
    async with app_client() as c:
        r = await c.post(CHECK.format("SmaCross"), content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"]["code"] == "VALIDATION_ERROR" and body["status_code"] == 422
    assert body["path"] == CHECK.format("SmaCross")
    assert [e["loc"] for e in body["error"]["details"]["errors"]] == [loc]
    assert "Traceback" not in r.text


async def test_http_check_needs_a_token_when_auth_is_on_and_sees_only_your_presets() -> None:
    preset = {"name": "Mine", "base_strategy": "SmaCross", "parameters": {"fast": 5, "slow": 20}}
    async with auth_client() as c:
        alice = await bearer(c, "alice")
        bob = await bearer(c, "bob")
        anonymous = await c.post(CHECK.format("SmaCross"), json=BODY)
        anonymous_create = await c.post("/api/v1/strategies", json=preset)
        with_token = await c.post(CHECK.format("SmaCross"), json=BODY, headers=alice)
        created = await c.post("/api/v1/strategies", json=preset, headers=alice)
        others = await c.post(CHECK.format(created.json()["id"]), json=BODY, headers=bob)
    assert anonymous.status_code == anonymous_create.status_code == 401
    assert anonymous.json()["error"]["code"] == anonymous_create.json()["error"]["code"] == "NOT_AUTHENTICATED"
    assert with_token.status_code == 200 and with_token.json()["passed"] is True
    assert others.status_code == 404 and others.json()["error"]["code"] == "NOT_FOUND"


# OpenAPI -----------------------------------------------------------------------------------------------------
def _conform(spec: dict[str, Any], response: httpx.Response) -> None:
    """The response's status is documented for the check operation and its body matches the documented schema."""
    op = schemathesis.openapi.from_dict(spec)["/api/v1/strategies/{strategy_ref}/check"]["POST"]
    try:
        op.Case(path_parameters={"strategy_ref": "SmaCross"}).validate_response(
            response, checks=[status_code_conformance, response_schema_conformance]
        )
    except FailureGroup as group:
        raise AssertionError("\n".join(str(f).strip() for f in group.exceptions)) from None


async def test_openapi_documents_the_check_with_the_check_document_and_its_answers_conform(
    user_strategies: Path,
) -> None:
    async with app_client(get_settings()) as c:
        spec = (await c.get("/openapi.json")).json()
        passing = await c.post(CHECK.format("SmaCross"), json=BODY)
        failing = await c.post(CHECK.format("PeeksAhead"), json=BODY)
        too_large = await c.post(CHECK.format("SmaCross"), json=MINUTES_2024)
        unknown = await c.post(CHECK.format("Nope"), json=BODY)
    op = spec["paths"]["/api/v1/strategies/{strategy_ref}/check"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/CheckRequest"}
    ok = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/CheckDocument"}
    assert {"400", "401", "404", "422"} <= set(op["responses"])
    document = spec["components"]["schemas"]["CheckDocument"]
    assert {"passed", "checks", "bars", "window", "entries", "exits"} <= set(document["required"])
    item = spec["components"]["schemas"]["CheckItem"]
    assert item["properties"]["name"]["enum"] == ["look_ahead", "window"]
    assert "first_difference" in item["required"]
    for response in (passing, failing, too_large, unknown):
        _conform(spec, response)


# SDK ---------------------------------------------------------------------------------------------------------
def _assert_sdk_failure(result: CheckResult) -> None:
    assert isinstance(result, CheckResult) and result.passed is False
    assert [c.name for c in result.failed] == ["look_ahead", "window"]
    first = result.check("look_ahead").first_difference
    assert first is not None and first.time == START + timedelta(hours=first.bar)


def test_sdk_checks_builtins_presets_and_user_strategies_and_types_its_errors(user_strategies: Path) -> None:
    with LiveServer(get_settings()) as srv, CrackTraderAPI(srv.base_url) as api:
        result = api.check_strategy("SmaCross", exchange="synthetic", start_date="2024-01-01", end_date="2025-01-01")
        assert result.passed is True and result.failed == [] and result.bars == 8784 and result.window == 31
        assert [c.name for c in result.checks] == ["look_ahead", "window"]
        assert result.start == START and result.check("window").first_difference is None

        preset = api.create_strategy("Fast SMA", base_strategy="SmaCross", parameters={"fast": 5, "slow": 20})
        by_id = api.check_strategy(
            preset.id or 0,
            strategy_params={"slow": 25},
            symbols="ETH/USDT",
            timeframe="4h",
            start_date=START,
            end_date=datetime(2025, 1, 1, tzinfo=UTC),
            exchange="synthetic",
        )
        assert (by_id.strategy, by_id.parameters["slow"], by_id.symbols, by_id.timeframe) == (
            "Fast SMA",
            25,
            ["ETH/USDT"],
            "4h",
        )
        assert by_id.bars == 366 * 6 and by_id.passed is True

        _assert_sdk_failure(
            api.check_strategy("PeeksAhead", exchange="synthetic", start_date="2024-01-01", end_date="2025-01-01")
        )
        with pytest.raises(CheckTooLargeError) as too_large:
            api.check_strategy(
                "SmaCross", timeframe="1m", exchange="synthetic", start_date=START, end_date="2025-01-01"
            )
        assert isinstance(too_large.value, ValidationError)
        assert (too_large.value.status_code, too_large.value.code) == (422, "CHECK_TOO_LARGE")
        assert too_large.value.details == {"bars": 527_040, "max_bars": 200_000}
        with pytest.raises(UnknownStrategyError) as unknown:
            api.check_strategy("Nope", exchange="synthetic")
        assert unknown.value.status_code == 400 and "SmaCross" in unknown.value.details["available"]


async def test_async_sdk_checks_and_types_its_errors(user_strategies: Path) -> None:
    with LiveServer(get_settings()) as srv:
        async with AsyncCrackTraderAPI(srv.base_url) as api:
            year: dict[str, Any] = {"exchange": "synthetic", "start_date": "2024-01-01", "end_date": "2025-01-01"}
            passing = await api.check_strategy("SmaCrossEvents", **year)
            assert passing.passed is True and passing.style == "event" and passing.entries >= 50
            _assert_sdk_failure(await api.check_strategy("PeeksAhead", **year))
            window = await api.check_strategy("AllTimeHigh", **year)
            assert window.passed is False and [c.name for c in window.failed] == ["window"]
            with pytest.raises(CheckTooLargeError) as too_large:
                await api.check_strategy("SmaCross", timeframe="1m", **year)
            assert too_large.value.details == {"bars": 527_040, "max_bars": 200_000}


def test_the_server_keeps_answering_while_a_check_runs(tmp_path: Path) -> None:
    # SlowStrategy's 8,784 bars take at least 5 ms each until the release file exists: the check cannot end
    # before the test releases it, whatever the machine.
    release = tmp_path / "release"
    body = {**BODY, "strategy_params": {"bar_ms": 5, "release_file": str(release)}}
    with LiveServer(get_settings()) as srv, concurrent.futures.ThreadPoolExecutor(1) as pool:
        check = pool.submit(httpx.post, srv.base_url + CHECK.format("SlowStrategy"), json=body, timeout=300)
        statuses = [httpx.get(srv.base_url + "/api/v1/status", timeout=30).status_code for _ in range(5)]
        assert statuses == [200] * 5
        assert not check.done()
        release.write_text("")
        response = check.result()
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["strategy"] == "SlowStrategy" and doc["passed"] is True
    assert any("never traded" in w for w in doc["warnings"])
