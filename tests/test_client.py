"""The Python SDK (`cracktrader.client`) against a real uvicorn: every method, error mapping, streams, imports.

Error bodies the server never sends (a proxy's HTML 502, a 429 with Retry-After, a WebSocket handshake refused
with 401) come from a small stdlib HTTP server on loopback, so they too travel through real sockets.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import csv
import io
import json
import pickle
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from cracktrader.client import (
    AsyncCrackTraderAPI,
    AuthenticationError,
    BacktestRequest,
    ConflictError,
    ConnectionError,
    CrackTraderAPI,
    CrackTraderError,
    DuplicateNameError,
    Event,
    InvalidResponseError,
    InvalidStrategyParamsError,
    InvalidSymbolError,
    InvalidTimeframeError,
    NoActiveRunError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RunAlreadyActiveError,
    RunFailedError,
    RunNotResettableError,
    ServerError,
    Status,
    StreamClosedError,
    TimeoutError,
    UnknownStrategyError,
    ValidationError,
)
from support import free_loopback_port
from web_support import SLOW_RUN, YEAR_1H, live_server

ROOT = Path(__file__).resolve().parent.parent
SDK_DOC = ROOT / "docs" / "sdk.md"
DOC_URL = "http://127.0.0.1:8000"
NO_DATA_RUN = {**YEAR_1H, "start_date": "2010-01-01", "end_date": "2010-02-01"}
TERMINAL = {"completed", "failed", "stopped"}
FAST_POLL = 0.02


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def wait_until_simulating(api: CrackTraderAPI, timeout: float = 30.0) -> Status:
    """The status once a slow run is simulating bars (so it is surely active)."""
    deadline = time.monotonic() + timeout
    while True:
        status = api.get_status()
        if status.status == "running" and status.bars_processed > 0:
            return status
        assert time.monotonic() < deadline, f"run never started simulating: {status}"
        time.sleep(FAST_POLL)


# ------------------------------------------------------------------------------------------ imports


FORBIDDEN_MODULES = [
    "cracktrader.web",
    "cracktrader.runs",
    "cracktrader.db",
    "cracktrader.engine",
    "cracktrader.data",
    "cracktrader.strategies",
    "cracktrader.live",
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "numba",
    "numpy",
    "ccxt",
]


def run_python(code: str) -> Any:
    """Run `code` in a fresh interpreter and return the JSON it prints last."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_client_loads_no_server_modules() -> None:
    loaded = run_python(
        "import json, sys\n"
        "import cracktrader.client\n"
        "from cracktrader import AsyncCrackTraderAPI, CrackTraderAPI\n"
        "api = CrackTraderAPI('http://127.0.0.1:9')\n"
        "stream = api.stream_status()\n"
        f"bad = [m for m in sys.modules if any(m == f or m.startswith(f + '.') for f in {FORBIDDEN_MODULES!r})]\n"
        "print(json.dumps({'bad': bad, 'websockets': 'websockets' in sys.modules}))\n"
    )
    assert loaded == {"bad": [], "websockets": False}


def test_import_cracktrader_is_lazy_and_from_cracktrader_import_crack_trader_api_works() -> None:
    state = run_python(
        "import json, sys\n"
        "import cracktrader\n"
        "before = 'httpx' in sys.modules\n"
        "from cracktrader import CrackTraderAPI, AsyncCrackTraderAPI\n"
        "import cracktrader.client as client\n"
        "try:\n"
        "    cracktrader.NoSuchThing\n"
        "    missing = 'no error'\n"
        "except AttributeError as exc:\n"
        "    missing = str(exc)\n"
        "same = CrackTraderAPI is client.CrackTraderAPI and AsyncCrackTraderAPI is client.AsyncCrackTraderAPI\n"
        "print(json.dumps({'httpx_before': before, 'httpx_after': 'httpx' in sys.modules, 'same': same,\n"
        "    'version': cracktrader.__version__, 'listed': 'CrackTraderAPI' in dir(cracktrader), 'missing': missing,\n"
        "}))\n"
    )
    assert state["httpx_before"] is False and state["httpx_after"] is True
    assert state["same"] is True and state["version"] and state["listed"] is True
    assert "NoSuchThing" in state["missing"]


# ------------------------------------------------------------------------------------------ round trips


def test_backtest_round_trip_through_every_read_method() -> None:
    with live_server() as srv, CrackTraderAPI(srv.base_url, api_key="k", token="t") as api:
        idle = api.get_status()
        assert idle.status == "idle" and idle.run_id is None and not idle.is_active
        with pytest.raises(NoActiveRunError, match="pass run_id"):
            api.get_balance()  # balances are a session's (test_client_sessions.py); a backtest has none

        started = api.start_backtest(**YEAR_1H)
        assert started.status == "starting" and started.run_id and "poll /status" in started.message
        status = api.wait_for_completion(started.run_id, poll_interval=FAST_POLL)
        assert status.status == "completed" and status.is_finished and status.run_id == started.run_id
        assert status.progress == 1.0 and status.bars_processed == status.bars_total == 8784
        assert isinstance(status.start_time, datetime) and status.start_time.tzinfo is not None

        results = api.get_results()
        assert results.run_id == started.run_id and results.status == "completed" and results.error is None
        assert results.final_value == pytest.approx(status.value)
        assert results.performance_metrics["total_trades"] > 0
        assert results.page is not None and len(results.trades) == results.page.trades.total == status.trade_count
        assert results.page.equity_points_total == 8784 and len(results.equity_curve) == results.page.equity_points
        assert results.config is not None and results.config["exchange"] == "synthetic"
        assert results.equity_curve[-1].value == pytest.approx(status.value)
        first = results.trades[0]
        assert first.symbol == "BTC/USDT" and first.side == "buy" and first.price > 0 and first.timestamp.year == 2024
        assert {o.status for o in results.orders} >= {"filled"}

        page = api.get_results(max_points=100, limit=10, offset=5)
        assert page.page is not None and page.page.equity_points <= 100 and len(page.equity_curve) <= 100
        assert [t.id for t in page.trades] == [t.id for t in results.trades[5:15]]
        assert page.page.trades.offset == 5 and page.page.trades.limit == 10

        detailed = api.get_detailed_status()
        assert detailed.status == "completed" and 0 < len(detailed.recent_trades) <= 50
        assert detailed.recent_trades[-1].id == results.trades[-1].id and detailed.health["status"] == "healthy"

        record = api.get_run(started.run_id)
        assert (record.run_id, record.status, record.mode, record.strategy_name) == (
            started.run_id,
            "completed",
            "backtest",
            "TestStrategy",
        )
        assert record.symbols == ["BTC/USDT"] and record.final_value == pytest.approx(results.final_value)
        listed = api.list_runs(mode="backtest", status="completed", strategy="TestStrategy", symbol="btc/usdt")
        assert listed.total == 1 and [r.run_id for r in listed.items] == [started.run_id]
        assert api.list_runs(mode="paper").total == 0

        again = api.get_run_results(started.run_id, limit=3)
        assert again.final_value == results.final_value and [t.id for t in again.trades] == [1, 2, 3]

        trades_bytes = api.trades_csv(started.run_id)
        trades_text = api.trades_csv(started.run_id, as_text=True)
        assert isinstance(trades_bytes, bytes) and trades_bytes.decode() == trades_text
        rows = csv_rows(trades_text)
        assert len(rows) == len(results.trades) and float(rows[0]["price"]) == pytest.approx(first.price)
        equity = csv_rows(api.equity_csv(started.run_id, as_text=True))
        assert len(equity) == 8784 and float(equity[-1]["value"]) == pytest.approx(status.value)


def test_catalog_meta_and_health_are_typed() -> None:
    with live_server() as srv, CrackTraderAPI(srv.base_url) as api:
        health = api.get_health()
        assert health.status == "healthy" and health.is_healthy and health.api_version == "v1"
        assert {"database", "data_store", "executor", "exchanges", "credentials"} == set(health.checks)
        strategies = api.get_strategies()
        by_name = {s.name: s for s in strategies.items}
        assert strategies.total == len(strategies.items) and by_name["SmaCross"].parameters["slow"] == 30
        assert by_name["SmaCross"].parameters_schema is not None
        assert by_name["SmaCross"].parameters_schema["properties"]["fast"]["default"] == 10
        exchanges = api.get_exchanges()
        by_id = {e.id: e for e in exchanges.items}
        assert exchanges.default == "binance" and by_id["synthetic"].ohlcv and by_id["binance"].sandbox
        assert "1h" in by_id["synthetic"].timeframes
        okx = by_id["okx"].live_trading
        assert okx is not None and okx.supported and okx.client_order_ids and okx.missing == []
        meta = api.get_meta()
        assert meta.api_version == "v1" and meta.app_version and meta.deprecations[0]["path"] == "/api/v1/run/status"


def test_stored_strategies_crud_and_a_preset_run_through_the_sdk() -> None:
    with live_server() as srv, CrackTraderAPI(srv.base_url) as api:
        preset = api.create_strategy("Quick SMA", base_strategy="SmaCross", parameters={"fast": 5, "slow": 20})
        assert preset.id is not None and preset.kind == "preset" and preset.read_only is False
        assert api.get_strategy(preset.id) == preset and api.get_strategy("SmaCross").kind == "class"
        with pytest.raises(DuplicateNameError) as dup:
            api.create_strategy("quick sma", base_strategy="SmaCross")
        assert dup.value.status_code == 409 and dup.value.code == "DUPLICATE_NAME"
        with pytest.raises(InvalidStrategyParamsError):
            api.update_strategy(preset.id, parameters={"fast": -1})
        renamed = api.update_strategy(preset.id, description="five over twenty", is_active=True)
        assert renamed.description == "five over twenty" and renamed.parameters == {"fast": 5, "slow": 20}
        presets = api.get_strategies(kind="preset", active_only=True)
        assert [s.name for s in presets.items] == ["Quick SMA"] and presets.total == 1
        results = api.backtest({**YEAR_1H, "strategy_name": "Quick SMA"}, poll_interval=FAST_POLL)
        assert results.config["strategy_class"] == "SmaCross" and results.config["strategy_params"]["fast"] == 5
        api.delete_strategy(preset.id)
        with pytest.raises(NotFoundError):
            api.get_strategy(preset.id)


def test_backtest_convenience_resets_a_finished_runner_and_accepts_a_model() -> None:
    with live_server() as srv, CrackTraderAPI(srv.base_url) as api:
        first = api.backtest(YEAR_1H, poll_interval=FAST_POLL)
        request = BacktestRequest(
            strategy_name="SmaCross",
            strategy_params={"fast": 5, "slow": 20},
            symbols="ETH/USDT",
            timeframe="4h",
            start_date=datetime(2024, 1, 1, tzinfo=UTC),
            end_date=datetime(2024, 7, 1, tzinfo=UTC),
            exchange="synthetic",
        )
        second = api.backtest(request, poll_interval=FAST_POLL, limit=5)
        assert first.run_id != second.run_id and first.status == second.status == "completed"
        assert second.config is not None and second.config["symbols"] == ["ETH/USDT"]
        assert second.config["strategy_params"] == {"fast": 5, "slow": 20}
        assert second.config["start_date"].startswith("2024-01-01T00:00:00")
        assert second.page is not None and len(second.trades) == min(5, second.page.trades.total)
        assert api.get_status().run_id == second.run_id
        with pytest.raises(RunAlreadyActiveError):
            api.backtest(YEAR_1H, reset=False)


def test_backtest_convenience_raises_run_failed_with_the_run_error_code() -> None:
    with live_server() as srv, CrackTraderAPI(srv.base_url) as api:
        with pytest.raises(RunFailedError) as caught:
            api.backtest(NO_DATA_RUN, poll_interval=FAST_POLL)
        assert caught.value.code == "DATA_UNAVAILABLE" and caught.value.details["status"] == "failed"
        assert caught.value.message == api.get_status().error


def test_stop_reset_and_delete_follow_the_run_lifecycle() -> None:
    with live_server(ws_queue_size=100_000) as srv, CrackTraderAPI(srv.base_url) as api:
        started = api.start_backtest(SLOW_RUN)
        assert started.run_id is not None
        wait_until_simulating(api)
        with pytest.raises(RunNotResettableError) as refused:
            api.reset()
        assert refused.value.status_code == 409 and refused.value.details["status"] == "running"
        with pytest.raises(RunNotResettableError):
            api.delete_run(started.run_id)
        with pytest.raises(TimeoutError) as slow:
            api.wait_for_completion(started.run_id, timeout=0.1, poll_interval=FAST_POLL)
        assert isinstance(slow.value, builtins.TimeoutError) and slow.value.details["status"] == "running"

        stopped = api.stop()
        assert stopped.status == "stopped" and stopped.run_id == started.run_id
        final = api.wait_for_completion(started.run_id, timeout=5)
        assert final.status == "stopped" and 0 < final.bars_processed < final.bars_total
        with pytest.raises(NoActiveRunError) as nothing:
            api.stop()
        assert isinstance(nothing.value, ConflictError) and nothing.value.code == "NO_ACTIVE_RUN"

        reset = api.reset()
        assert reset.status == "idle" and reset.run_id == started.run_id
        with pytest.raises(NoActiveRunError):
            api.wait_for_completion()
        with pytest.raises(ConflictError) as moved_on:
            api.wait_for_completion(started.run_id)
        assert moved_on.value.code == "RUN_REPLACED"

        assert api.delete_run(started.run_id) is None
        with pytest.raises(NotFoundError):
            api.get_run(started.run_id)


# ------------------------------------------------------------------------------------------ errors


def test_starting_twice_raises_run_already_active_with_the_envelope() -> None:
    with live_server() as srv, CrackTraderAPI(srv.base_url) as api:
        run = api.start_backtest(YEAR_1H)
        with pytest.raises(RunAlreadyActiveError) as caught:
            api.start_backtest(YEAR_1H)
        err = caught.value
        assert isinstance(err, ConflictError) and isinstance(err, CrackTraderError)
        assert (err.status_code, err.code, err.path) == (409, "RUN_ALREADY_ACTIVE", "/api/v1/run/backtest")
        assert err.details["run_id"] == run.run_id and err.details["status"] in {"starting", "running", "completed"}
        assert "not idle" in err.message and err.request_id and re.fullmatch(r"[0-9a-f]{16}", err.request_id)
        assert str(err).startswith("[409 RUN_ALREADY_ACTIVE] ")
        assert err.body["error"]["code"] == "RUN_ALREADY_ACTIVE"
        copy = pickle.loads(pickle.dumps(err))
        assert type(copy) is RunAlreadyActiveError and copy.details == err.details and copy.status_code == 409
        api.wait_for_completion(run.run_id, poll_interval=FAST_POLL)


def test_unknown_run_raises_not_found_from_every_history_method() -> None:
    with live_server() as srv, CrackTraderAPI(srv.base_url) as api:
        for call in (
            lambda: api.get_run("nope"),
            lambda: api.get_run_results("nope"),
            lambda: api.trades_csv("nope"),
            lambda: api.equity_csv("nope"),
            lambda: api.delete_run("nope"),
        ):
            with pytest.raises(NotFoundError) as caught:
                call()
            assert caught.value.status_code == 404 and caught.value.details == {"run_id": "nope"}
        with pytest.raises(NotFoundError, match="No results yet"):
            api.get_results()
        with pytest.raises(NotFoundError) as odd:
            api.get_run("a b?c#d")  # characters with a meaning in URLs are escaped, not interpreted
        assert odd.value.details == {"run_id": "a b?c#d"}


@pytest.mark.parametrize(
    ("patch", "error", "status", "code"),
    [
        ({"symbols": ["BTCUSD"]}, InvalidSymbolError, 400, "INVALID_SYMBOL"),
        ({"timeframe": "7m"}, InvalidTimeframeError, 400, "INVALID_TIMEFRAME"),
        ({"strategy_name": "Nope"}, UnknownStrategyError, 400, "UNKNOWN_STRATEGY"),
        ({"strategy_params": {"period": -1}}, InvalidStrategyParamsError, 422, "INVALID_STRATEGY_PARAMS"),
        ({"initial_cash": -5}, ValidationError, 422, "VALIDATION_ERROR"),
    ],
)
def test_invalid_requests_raise_the_validation_error_of_their_code(
    patch: dict[str, Any], error: type[ValidationError], status: int, code: str
) -> None:
    with live_server() as srv, CrackTraderAPI(srv.base_url) as api:
        with pytest.raises(error) as caught:
            api.start_backtest({**YEAR_1H, **patch})
        assert isinstance(caught.value, ValidationError)
        assert (caught.value.status_code, caught.value.code) == (status, code)
        if code == "INVALID_SYMBOL":
            assert "BTC/USDT" in caught.value.details["supported_symbols"]
        if code == "VALIDATION_ERROR":
            assert caught.value.details["errors"][0]["loc"] == ["body", "initial_cash"]
        assert api.get_status().status == "idle"


def test_missing_required_fields_are_reported_by_the_server_as_validation_error() -> None:
    with live_server() as srv, CrackTraderAPI(srv.base_url) as api:
        with pytest.raises(ValidationError) as caught:
            api.start_backtest(symbols=["BTC/USDT"])
        assert caught.value.status_code == 422
        assert caught.value.details["errors"][0]["loc"] == ["body", "strategy_name"]


def test_a_live_request_that_cannot_trade_raises_a_validation_error_and_is_recorded() -> None:
    with live_server() as srv, CrackTraderAPI(srv.base_url) as api:
        with pytest.raises(ValidationError) as caught:
            api.start_live(
                strategy_name="TestStrategy",
                symbols="BTC/USDT",
                exchange="synthetic",
                exchange_config={"apiKey": "secret-key", "sandbox": True},
                mode="live",
            )
        assert (caught.value.status_code, caught.value.code) == (422, "INVALID_LIVE_REQUEST")
        assert "synthetic exchange has no orders" in caught.value.message
        record = api.get_run(caught.value.details["run_id"])
        assert (record.mode, record.status) == ("live", "failed")
        assert record.config["exchange_config"] == {"sandbox": True}
        assert record.config["exchange_config_dropped_keys"] == 1


def test_unreachable_server_raises_connection_error() -> None:
    url = f"http://127.0.0.1:{free_loopback_port()}"
    with CrackTraderAPI(url, timeout=5) as api:
        with pytest.raises(ConnectionError) as caught:
            api.get_status()
        with pytest.raises(ConnectionError):
            api.stream_status().recv(timeout=5)
    err = caught.value
    assert isinstance(err, builtins.ConnectionError) and err.status_code is None and err.code == "CONNECTION_ERROR"
    assert url in err.message
    with pytest.raises(ValueError, match="http"):
        CrackTraderAPI("127.0.0.1:8000")


class StubHandler(BaseHTTPRequestHandler):
    """Answers each path with a canned response and records the requests (path and headers)."""

    protocol_version = "HTTP/1.1"  # websockets refuses a handshake answered in HTTP/1.0
    routes: ClassVar[dict[str, tuple[int, dict[str, str], bytes]]] = {}
    seen: ClassVar[list[tuple[str, dict[str, str]]]] = []

    def do_GET(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        headers["user-agent"] = ", ".join(self.headers.get_all("User-Agent") or [])  # duplicates show up
        self.seen.append((self.path, headers))
        status, headers, body = self.routes.get(self.path.split("?")[0], (404, {}, b""))
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def stub_server(routes: dict[str, tuple[int, dict[str, str], bytes]]) -> Iterator[str]:
    """A loopback HTTP server answering `routes`; yields its base URL."""
    StubHandler.routes = routes
    StubHandler.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


ENVELOPE_429 = json.dumps(
    {"error": {"code": "RATE_LIMITED", "message": "Slow down", "details": {"limit": 100}}, "status_code": 429}
).encode()
HTML = {"Content-Type": "text/html"}


NO_ENVELOPE_ERRORS = [
    pytest.param(
        502, HTML, b"<html><body><h1>502 Bad Gateway</h1></body></html>", ServerError, "BAD_GATEWAY", "Bad Gateway",
        id="proxy-html-502",
    ),
    pytest.param(
        503, {"Content-Type": "text/plain"}, b"upstream down", ServerError, "SERVICE_UNAVAILABLE", "upstream down",
        id="plain-text-503",
    ),
    pytest.param(
        429, {"Retry-After": "7", "Content-Type": "application/json"}, ENVELOPE_429, RateLimitError, "RATE_LIMITED",
        "Slow down", id="enveloped-429-with-retry-after",
    ),
    pytest.param(
        401, {"Content-Type": "application/json"}, b'{"detail": "Not authenticated"}', AuthenticationError,
        "UNAUTHORIZED", "Not authenticated", id="fastapi-detail-401",
    ),
    pytest.param(403, {}, b"", PermissionDeniedError, "FORBIDDEN", "HTTP 403", id="empty-403"),
    pytest.param(418, {}, b"teapot", CrackTraderError, "HTTP_418", "teapot", id="unknown-status"),
]  # fmt: skip


@pytest.mark.parametrize(("status", "headers", "body", "error", "code", "message_part"), NO_ENVELOPE_ERRORS)
def test_error_bodies_without_the_envelope_still_raise_typed_errors(
    status: int, headers: dict[str, str], body: bytes, error: type[CrackTraderError], code: str, message_part: str
) -> None:
    route = {"/api/v1/status": (status, headers, body)}
    with stub_server(route) as url, CrackTraderAPI(url) as api, pytest.raises(error) as caught:
        api.get_status()
    err = caught.value
    assert type(err) is error and (err.status_code, err.code) == (status, code) and message_part in err.message
    if isinstance(err, RateLimitError):
        assert err.retry_after == 7.0 and err.details == {"limit": 100}


def test_rate_limit_retry_after_as_an_http_date_becomes_seconds() -> None:
    soon = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    route = {"/api/v1/status": (429, {"Retry-After": soon}, b"")}
    with stub_server(route) as url, CrackTraderAPI(url) as api, pytest.raises(RateLimitError) as caught:
        api.get_status()
    assert caught.value.retry_after is not None and 25 <= caught.value.retry_after <= 31


def test_a_success_that_is_not_the_endpoints_json_raises_invalid_response() -> None:
    routes = {
        "/api/v1/status": (200, HTML, b"<html>captive portal</html>"),
        "/api/v1/meta": (200, {"Content-Type": "application/json"}, b'{"unexpected": true}'),
    }
    with stub_server(routes) as url, CrackTraderAPI(url) as api:
        with pytest.raises(InvalidResponseError, match="Expected JSON"):
            api.get_status()
        with pytest.raises(InvalidResponseError, match="not a Meta"):
            api.get_meta()


def test_an_unhealthy_report_is_returned_but_a_proxy_503_page_raises() -> None:
    report = {"status": "unhealthy", "version": "0.1.0", "api_version": "v1", "checks": {"database": {}}}
    routes = {"/api/v1/health": (503, {"Content-Type": "application/json"}, json.dumps(report).encode())}
    with stub_server(routes) as url, CrackTraderAPI(url) as api:
        health = api.get_health()
    assert health.status == "unhealthy" and not health.is_healthy and set(health.checks) == {"database"}
    routes = {"/api/v1/health": (503, HTML, b"<html>Service Unavailable</html>")}
    with stub_server(routes) as url, CrackTraderAPI(url) as api, pytest.raises(ServerError) as caught:
        api.get_health()
    assert caught.value.code == "SERVICE_UNAVAILABLE"


def test_credentials_are_sent_as_headers_on_requests_and_on_stream_handshakes() -> None:
    refused = json.dumps({"error": {"code": "UNAUTHORIZED", "message": "Bad token", "details": {}}}).encode()
    routes = {
        "/api/v1/meta": (200, {}, b'{"api_version": "v1", "app_version": "9.9.9", "extra_field": 1}'),
        "/api/v1/ws/status": (401, {"Content-Type": "application/json"}, refused),
    }
    with stub_server(routes) as url, CrackTraderAPI(url, api_key="key-1", token="tok/2") as api:
        meta = api.get_meta()
        with pytest.raises(AuthenticationError) as caught:
            api.stream_status().recv(timeout=5)
    assert meta.app_version == "9.9.9" and meta.model_extra == {"extra_field": 1}
    (http_path, http_headers), (ws_path, ws_headers) = StubHandler.seen
    assert http_path == "/api/v1/meta" and http_headers["x-api-key"] == "key-1"
    assert http_headers["authorization"] == "Bearer tok/2" and http_headers["user-agent"].startswith("cracktrader-")
    assert ws_path == "/api/v1/ws/status" and ws_headers["x-api-key"] == "key-1"
    assert ws_headers["authorization"] == "Bearer tok/2"
    assert ws_headers["user-agent"] == http_headers["user-agent"]
    assert caught.value.message == "Bad token" and "tok" not in str(caught.value.details)


# ------------------------------------------------------------------------------------------ async


@pytest.mark.anyio
async def test_async_client_round_trips_a_backtest_and_maps_errors() -> None:
    with live_server() as srv:
        async with AsyncCrackTraderAPI(srv.base_url) as api:
            assert (await api.get_health()).status == "healthy"
            results = await api.backtest(YEAR_1H, poll_interval=FAST_POLL)
            status = await api.get_status()
            assert results.status == "completed" and results.final_value == pytest.approx(status.value)
            assert results.page is not None and results.page.trades.total == status.trade_count
            with pytest.raises(NoActiveRunError):
                await api.get_balance()  # a backtest is not a session
            assert (await api.get_run(str(results.run_id))).status == "completed"
            assert len(csv_rows(await api.trades_csv(str(results.run_id), as_text=True))) == status.trade_count
            assert (await api.list_runs()).total == 1
            assert len((await api.get_detailed_status()).recent_trades) > 0
            assert (await api.get_meta()).api_version == "v1"
            assert len((await api.get_strategies()).items) > 0 and (await api.get_exchanges()).total > 1
            made = await api.create_strategy("Async preset", base_strategy="EmaCross")
            assert (await api.update_strategy(made.id or 0, name="Renamed")).name == "Renamed"
            assert (await api.get_strategy(made.id or 0)).base_strategy == "EmaCross"
            await api.delete_strategy(made.id or 0)
            with pytest.raises(NotFoundError):
                await api.delete_strategy(made.id or 0)
            with pytest.raises(RunAlreadyActiveError) as caught:
                await api.start_backtest(YEAR_1H)
            assert caught.value.details["status"] == "completed"
            with pytest.raises(NotFoundError):
                await api.get_run_results("nope")
            with pytest.raises(NoActiveRunError):
                await api.stop()
            assert (await api.reset()).status == "idle"
            with pytest.raises(InvalidSymbolError):
                await api.start_backtest(YEAR_1H, symbols=["BTCUSD"])
            with pytest.raises(ValidationError, match="synthetic exchange has no orders"):
                await api.start_live(
                    strategy_name="TestStrategy", symbols=["BTC/USDT"], exchange="synthetic", mode="live"
                )
            await api.delete_run(str(results.run_id))
    async with AsyncCrackTraderAPI(srv.base_url) as gone:
        with pytest.raises(ConnectionError):
            await gone.get_status()


# ------------------------------------------------------------------------------------------ streams


def test_sync_status_stream_yields_a_snapshot_then_the_runs_status_updates() -> None:
    with live_server() as srv, CrackTraderAPI(srv.base_url) as api, api.stream_status() as events:
        snapshot = events.recv(timeout=10)
        assert snapshot.type == "snapshot" and isinstance(snapshot.timestamp, datetime)
        assert snapshot.status() == api.get_status()
        run = api.start_backtest(YEAR_1H)
        seen: list[Event] = []
        for event in events:
            seen.append(event)
            status = event.status()
            if status is not None and status.is_finished:
                break
        statuses = [e.payload["status"] for e in seen if e.type == "status_update"]
        assert statuses[0] == "starting" and "running" in statuses and statuses[-1] == "completed"
        assert all(e.payload["run_id"] == run.run_id for e in seen)
        assert {e.type for e in seen} <= {"status_update", "trade_execution"}
        assert any(e.type == "trade_execution" and e.payload["symbol"] == "BTC/USDT" for e in seen)
        final = seen[-1].status()
        assert final is not None and final.value == pytest.approx(api.get_status().value)
    assert events.closed
    with pytest.raises(StopIteration):
        next(events)


@pytest.mark.anyio
async def test_async_status_stream_yields_a_snapshot_then_the_runs_status_updates() -> None:
    with live_server() as srv:
        async with AsyncCrackTraderAPI(srv.base_url) as api, api.stream_status() as events:
            snapshot = await events.recv(timeout=10)
            assert snapshot.type == "snapshot" and snapshot.payload["status"] == "idle"
            run = await api.start_backtest(YEAR_1H)
            statuses: list[str] = []
            async with asyncio.timeout(30):
                async for event in events:
                    if event.type == "status_update":
                        statuses.append(event.payload["status"])
                        assert event.payload["run_id"] == run.run_id
                        if event.payload["status"] in TERMINAL:
                            break
            assert statuses[0] == "starting" and "running" in statuses and statuses[-1] == "completed"
        assert events.closed


def test_sync_run_stream_numbers_its_events_and_resumes_after_a_number_with_what_was_missed() -> None:
    week = {**YEAR_1H, "end_date": "2024-01-08T00:00:00Z"}
    with live_server() as srv, CrackTraderAPI(srv.base_url) as api:
        run = api.start_backtest(week)
        with api.stream_status(run_id=run.run_id, since=0) as events:
            seen = [events.recv(timeout=10)]
            while (status := seen[-1].status()) is None or not status.is_finished or seen[-1].type == "snapshot":
                seen.append(events.recv(timeout=30))
        assert seen[0].type == "snapshot" and seen[0].seq == 0
        assert [e.seq for e in seen[1:]] == list(range(1, len(seen)))
        middle = seen[len(seen) // 2]
        assert middle.seq is not None
        with api.stream_status(run_id=run.run_id, since=middle.seq) as again:
            resumed = [again.recv(timeout=10) for _ in range(len(seen) - middle.seq)]
        assert resumed[0].type == "snapshot" and resumed[1:] == seen[middle.seq + 1 :]
        with pytest.raises(ValueError, match="pass run_id"):
            api.stream_status(since=3)


def test_sync_subscribe_yields_status_and_trades_for_the_symbol() -> None:
    with (
        live_server() as srv,
        CrackTraderAPI(srv.base_url) as api,
        api.subscribe(["trades"], symbol="BTC/USDT") as messages,
    ):
        assert messages.subscriptions == [{"channel": "trades", "symbol": "BTC/USDT"}]
        # Status events carry no symbol, so a symbol-scoped status subscription would never match them.
        assert {(s["channel"], s["symbol"]) for s in messages.subscribe(["status"])} == {
            ("trades", "BTC/USDT"),
            ("status", None),
        }
        channel, data = messages.recv(timeout=10)  # subscribing to status sends the current status
        assert channel == "status" and data["status"] == "idle"
        api.start_backtest(YEAR_1H)
        received = []
        for message in messages:
            received.append(message)
            if message.channel == "status" and message.data["status"] in TERMINAL:
                break
        trades = [d for c, d in received if c == "trades"]
        assert trades and all(t["symbol"] == "BTC/USDT" and t["price"] > 0 for t in trades)
        assert isinstance(trades[0]["timestamp"], int)  # the channel protocol keeps epoch milliseconds
        assert received[-1].data["status"] == "completed"
        assert {c for c, _ in received} == {"trades", "status"}
        assert messages.unsubscribe(["trades"], symbol="BTC/USDT") == [{"channel": "status", "symbol": None}]


@pytest.mark.anyio
async def test_async_subscribe_yields_status_and_trades() -> None:
    with live_server() as srv:
        async with AsyncCrackTraderAPI(srv.base_url) as api, api.subscribe(["trades", "status"]) as messages:
            assert (await messages.recv(timeout=10)).data["status"] == "idle"
            await api.start_backtest(YEAR_1H)
            channels: list[str] = []
            async with asyncio.timeout(30):
                async for channel, data in messages:
                    channels.append(channel)
                    if channel == "status" and data["status"] in TERMINAL:
                        assert data["status"] == "completed"
                        break
            assert "trades" in channels and channels[-1] == "status"


def test_subscribing_to_an_unknown_channel_raises_validation_error() -> None:
    with live_server() as srv, CrackTraderAPI(srv.base_url) as api:
        with pytest.raises(ValidationError) as caught, api.subscribe(["balances"]):
            pass
        assert caught.value.code == "INVALID_CHANNEL" and "status" in caught.value.details["accepted"]
        with api.subscribe([]) as stream:
            all_channels = ["status", "orders", "trades", "equity"]
            stream.subscribe(all_channels, symbol="BTC/USDT")
            stream.subscribe(all_channels, symbol="ETH/USDT")
            with pytest.raises(ValidationError) as limit:
                stream.subscribe(all_channels, symbol="SOL/USDT")
            assert limit.value.code == "SUBSCRIPTION_LIMIT" and limit.value.details == {"limit": 10, "current": 8}
            # The refusal leaves the socket open and the subscriptions as they were.
            assert len(stream.subscribe(["equity"])) == 9


def test_heartbeats_are_skipped_unless_asked_for() -> None:
    with live_server(ws_heartbeat_s=0.05) as srv, CrackTraderAPI(srv.base_url) as api:
        with api.stream_status(heartbeats=True) as loud:
            assert loud.recv(timeout=5).type == "snapshot"
            beat = loud.recv(timeout=5)
            assert beat.type == "heartbeat" and beat.payload == {}
        with api.stream_status() as quiet:
            assert quiet.recv(timeout=5).type == "snapshot"
            with pytest.raises(TimeoutError):
                quiet.recv(timeout=0.3)
        with api.subscribe(["status"], heartbeats=True) as channels:
            assert channels.recv(timeout=5).channel == "status"
            assert channels.recv(timeout=5).channel == "heartbeat"


def test_server_shutdown_raises_stream_closed_with_the_close_code_then_iteration_ends() -> None:
    with live_server() as server, CrackTraderAPI(server.base_url) as api:
        stream = api.stream_status()
        assert stream.recv(timeout=10).type == "snapshot"
        server.stop()
        with pytest.raises(StreamClosedError) as caught:
            stream.recv(timeout=10)
        assert isinstance(caught.value, ConnectionError) and caught.value.details["close_code"] == 1012  # restart
        assert stream.closed and list(stream) == []


# ------------------------------------------------------------------------------------------ docs


def doc_blocks() -> list[str]:
    """The Python blocks of docs/sdk.md, in order."""
    return re.findall(r"```python\n(.*?)```", SDK_DOC.read_text(), flags=re.DOTALL)


def test_sdk_doc_examples_run_against_a_live_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = doc_blocks()
    assert len(blocks) >= 6
    with live_server() as srv:
        monkeypatch.setenv("CRACKTRADER_BASE_URL", srv.base_url)
        for number, block in enumerate(blocks, 1):
            assert DOC_URL in block or "CrackTraderAPI(api_key=" in block, f"block {number} targets no server"
            code = compile(block.replace(DOC_URL, srv.base_url), f"docs/sdk.md block {number}", "exec")
            exec(code, {"__name__": f"sdk_doc_{number}"})
    out = capsys.readouterr().out
    assert re.search(r"^Final value: \$\d[\d,]*\.\d\d$", out, flags=re.MULTILINE), out
    assert "400 INVALID_SYMBOL ['BTC/USDT', 'ETH/USDT', 'SOL/USDT']" in out
    assert "RUN_ALREADY_ACTIVE" in out and "NOT_FOUND No run with id 'no-such-run'" in out
    assert "snapshot idle" in out and "completed after" in out and "unexpected" not in out
    assert "balance {'USDT': 10000.0}" in out and "stopped stopped" in out
    assert re.search(r"^session completed: value \d[\d,]*\.\d\d, fees \d", out, flags=re.MULTILINE), out


def test_start_live_in_paper_mode_runs_a_session_in_the_slot_until_stop_flattens_it() -> None:
    with live_server() as srv, CrackTraderAPI(srv.base_url) as api:
        started = api.start_live(strategy_name="TestStrategy", symbols="BTC/USDT", exchange="synthetic", mode="paper")
        status = api.get_status()
        stopped = api.stop(flatten=True)
        after = api.get_status()
        reset = api.reset()
    assert started.status == "running" and status.run_id == started.run_id and status.mode == "paper"
    assert status.model_extra is not None and status.model_extra["condition"] == "ok"
    assert stopped.status == "stopped" and after.status == "stopped" and reset.status == "idle"
