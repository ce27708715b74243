"""No secret sent in a run request is ever stored, served, echoed or logged; run configs stay small."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import socket
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import ccxt
import pytest
from sqlalchemy import inspect, text

from cracktrader.db.engine import make_engine
from cracktrader.runs.config import SECRET_KEYS, LiveConfig, redact
from cracktrader.runs.sanitize import (
    EXCHANGE_CONFIG_ALLOWLIST,
    MAX_CONFIG_BYTES,
    clean_exchange_config,
    exchange_client_config,
    looks_secret,
)
from cracktrader.settings import Settings
from cracktrader.web.log_redaction import redact_query
from web_support import YEAR_1H, app_client, wait_for_status

pytestmark = pytest.mark.anyio
LIVE = {"strategy_name": "TestStrategy", "symbols": ["BTC/USDT"], "exchange": "synthetic", "mode": "paper"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@functools.cache
def ccxt_credential_names() -> tuple[str, ...]:
    """Every name in any ccxt exchange's `requiredCredentials`."""
    names: set[str] = set()
    for exchange_id in ccxt.exchanges:
        names.update(getattr(ccxt, exchange_id)().requiredCredentials)
    return tuple(sorted(names))


def _spellings(name: str) -> set[str]:
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
    return {name, snake, snake.upper(), snake.replace("_", "-"), name[:1].upper() + name[1:], name.lower()}


UNUSUAL = (
    "apiSecret",
    "secretKey",
    "accessToken",
    "clientSecret",
    "refresh_token",
    "API-KEY",
    "Ok-Access-Passphrase",
    "privateKeyPem",
    "mnemonic",
    "note",  # an innocent name still carries a value that is not allowlisted
    "urls",
    "hostname",
    "base_url",
    "proxy",
    "httpsProxy",
)


class Markers:
    """Unique marker values that share a random prefix, so one search finds any of them."""

    def __init__(self) -> None:
        self.prefix = f"mk{uuid.uuid4().hex[:12]}"
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"{self.prefix}-{self.count}"


def secret_exchange_config(mark: Markers) -> dict[str, Any]:
    """Every ccxt credential name in several spellings, unusual ones, nested ones, and ill-typed allowlisted ones."""
    config: dict[str, Any] = {}
    for name in ccxt_credential_names():
        for spelling in _spellings(name):
            config[spelling] = mark()
    for name in UNUSUAL:
        config[name] = mark()
    config.update(
        {
            "headers": {"X-MBX-APIKEY": mark(), "Authorization": f"Bearer {mark()}", "User-Agent": mark()},
            "options": {"apiSecret": mark(), "defaultType": mark()},
            "urls": {"api": {"public": f"http://127.0.0.1:9/{mark()}"}},
            "sandbox": True,
            "enableRateLimit": mark(),  # wrong type: dropped
            "rateLimit": 50,
            "paper": {"initial_cash": 5000, "apiKey": mark(), "fee_rate": mark()},
            "risk": {"max_daily_loss": 100.0, "secret": [mark()]},
            "replay": {"speed": 10, "start_date": mark()},
            "credentials": {"name": "main-account", "apiKey": mark(), "secret": mark()},
            "list": [mark(), {"secret": mark()}],
        }
    )
    return config


def test_ccxt_credential_names_are_the_ones_the_issue_lists() -> None:
    names = set(ccxt_credential_names())
    assert {"apiKey", "secret", "uid", "login", "password", "twofa", "privateKey", "walletAddress", "token"} <= names


def test_exchange_config_keeps_only_allowlisted_scalars_at_every_depth() -> None:
    kept, dropped = clean_exchange_config(secret_exchange_config(Markers()))
    assert kept == {
        "sandbox": True,
        "rateLimit": 50,
        "paper": {"initial_cash": 5000},
        "risk": {"max_daily_loss": 100.0},
        "replay": {"speed": 10},
        "credentials": {"name": "main-account"},
    }
    credential_keys = sum(len(_spellings(n)) for n in ccxt_credential_names())
    # headers, options, list, enableRateLimit + the ill-typed or unknown keys inside the sections
    assert dropped == credential_keys + len(UNUSUAL) + 4 + 2 + 1 + 1 + 2


def test_allowlisted_keys_of_the_wrong_type_are_dropped() -> None:
    kept, dropped = clean_exchange_config(
        {"sandbox": "true", "rateLimit": True, "enableRateLimit": 1, "paper": 5, "replay": {"speed": float("nan")}}
    )
    assert (kept, dropped) == ({"replay": {}}, 5)
    assert clean_exchange_config("apiKey=x") == ({}, 1)
    assert clean_exchange_config(None) == ({}, 0)


def test_allowlist_is_data_with_a_section_for_paper_risk_replay_and_credentials() -> None:
    sections = {k for k, v in EXCHANGE_CONFIG_ALLOWLIST.items() if isinstance(v, dict)}
    assert sections == {"paper", "risk", "replay", "credentials"}
    assert set(EXCHANGE_CONFIG_ALLOWLIST["credentials"]) == {"name", "id"}  # type: ignore[arg-type]


def test_stored_config_records_how_many_keys_were_dropped_and_is_idempotent() -> None:
    config = LiveConfig(**LIVE, exchange_config={"apiKey": "a", "secret": "b", "sandbox": True})
    stored = redact(config.model_dump())
    assert stored["exchange_config"] == {"sandbox": True}
    assert stored["exchange_config_dropped_keys"] == 2
    assert stored["strategy_name"] == "TestStrategy" and stored["symbols"] == ["BTC/USDT"]
    assert redact(stored) == stored


def test_secret_names_match_in_any_spelling() -> None:
    for name in (*ccxt_credential_names(), "API_SECRET", "api-key", "X-MBX-APIKEY", "Authorization", "clientSecret"):
        assert looks_secret(name) and name in SECRET_KEYS, name
    for name in ("period", "symbol", "exchange_config", "quote_token", "timeframe", "strategy_params"):
        assert not looks_secret(name), name


def test_masks_secret_names_outside_exchange_config() -> None:
    body = {"username": "sam", "password": "pw-1", "nested": [{"API_SECRET": "s-2", "ok": 1}]}
    assert redact(body) == {"username": "sam", "password": "***", "nested": [{"API_SECRET": "***", "ok": 1}]}


def test_a_900_kb_config_is_stored_in_at_most_4_kb_and_says_it_was_truncated() -> None:
    config = {
        "strategy_name": "Custom",
        "strategy_params": {"weights": list(range(200_000)), **{f"p{i}": i for i in range(2000)}},
        "exchange_config": {"blob": "x" * 900_000},
    }
    stored = redact(config)
    assert len(json.dumps(stored)) <= MAX_CONFIG_BYTES
    assert stored["config_truncated"] is True and stored["exchange_config"] == {}
    assert stored["strategy_params"]["weights"].startswith("<list of 200000 items")
    assert stored["strategy_params"]["p0"] == 0
    assert stored["strategy_params_omitted"] == 2001 - len(stored["strategy_params"])
    assert redact(stored) == stored


def test_client_config_gets_credentials_and_allowlisted_settings_but_never_endpoints() -> None:
    request = {
        "apiKey": "k",
        "secret": "s",
        "password": "",
        "rateLimit": 100,
        "sandbox": True,
        "urls": {"api": "http://10.0.0.1"},
        "hostname": "evil.example",
        "proxy": "http://10.0.0.2",
        "headers": {"X-Forwarded-Host": "x"},
        "options": {"defaultType": "swap"},
    }
    names = ccxt.binance().requiredCredentials
    assert exchange_client_config(request, names) == {"rateLimit": 100, "apiKey": "k", "secret": "s"}


def test_log_lines_hide_secret_query_parameters_in_any_spelling() -> None:
    line = '"GET /api/v1/ws?token=t1&X_MBX_APIKEY=t2&api-secret=t3&symbol=BTC HTTP/1.1"'
    assert redact_query(line) == '"GET /api/v1/ws?token=***&X_MBX_APIKEY=***&api-secret=***&symbol=BTC HTTP/1.1"'


@contextlib.contextmanager
def _listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


async def test_exchange_endpoints_in_a_request_are_never_contacted() -> None:
    with _listener() as sock:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        endpoints = {"urls": {"api": {"public": url, "private": url}}, "hostname": url[7:], "proxy": url}
        async with app_client() as c:
            live = await c.post("/api/v1/run/live", json={**LIVE, "exchange_config": endpoints})
            assert live.status_code == 200, live.text  # a paper session on synthetic candles
            backtest = await c.post("/api/v1/run/backtest", json={**YEAR_1H, "exchange_config": endpoints})
            assert backtest.status_code == 422
            record = (await c.get(f"/api/v1/runs/{live.json()['run_id']}")).json()
            assert (await c.post("/api/v1/run/stop")).json()["status"] == "stopped"
        assert record["config"]["exchange_config"] == {} and record["config"]["exchange_config_dropped_keys"] == 3
        with pytest.raises(BlockingIOError):
            sock.accept()


def _cell_text(value: Any) -> str:
    if isinstance(value, bytes | memoryview):
        raw = bytes(value)
        with contextlib.suppress(zlib.error):
            raw = zlib.decompress(raw)
        return raw.decode("latin-1")
    return str(value)


async def _database_text(url: str) -> str:
    """Every row of every table in the database (reflected, not just the known models), as text."""
    engine = make_engine(url)
    parts: list[str] = []
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
            assert "runs" in tables
            for table in tables:
                rows = (await conn.execute(text(f'SELECT * FROM "{table}"'))).all()
                parts.extend(" ".join(_cell_text(v) for v in row) for row in rows)
    finally:
        await engine.dispose()
    return "\n".join(parts)


async def test_no_secret_sent_to_run_requests_is_returned_logged_or_stored(
    db_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    mark = Markers()
    secrets = secret_exchange_config(mark)
    top_level = {"apiSecret": mark(), "X-MBX-APIKEY": mark(), "privateKey": mark()}
    settings = db_settings.model_copy(update={"sqlalchemy_echo": True})
    bodies: list[str] = []
    caplog.set_level(logging.DEBUG)
    async with app_client(settings) as c:
        run_ids = []
        # Live is validated, recorded and refused (422: synthetic has no orders); paper refuses these settings in
        # exchange_config.paper (422).
        for mode, code in (("live", 422), ("paper", 422)):
            r = await c.post("/api/v1/run/live", json={**LIVE, "mode": mode, "exchange_config": secrets})
            assert r.status_code == code, r.text
            bodies.append(r.text)
            if mode == "live":
                run_ids.append(r.json()["error"]["details"]["run_id"])
        refused = [
            ("/api/v1/run/backtest", {**YEAR_1H, "exchange_config": secrets}, 422),
            (
                "/api/v1/run/live",
                {k: v for k, v in {**LIVE, "exchange_config": secrets}.items() if k != "symbols"},
                422,
            ),
            ("/api/v1/run/live", {**LIVE, "mode": "bogus", "exchange_config": secrets}, 422),
            ("/api/v1/run/live", {**LIVE, **top_level, "exchange_config": secrets}, 422),
            ("/api/v1/run/backtest", {**YEAR_1H, "strategy_params": {"apiKey": mark()}}, 422),
            ("/api/v1/run/live", {**LIVE, "exchange_config": {**secrets, "strategy_name": 5}, "timeframe": 3}, 422),
        ]
        for path, body, code in refused:
            r = await c.post(path, json=body)
            assert r.status_code == code, r.text
            bodies.append(r.text)
        r = await c.post("/api/v1/run/backtest", json=YEAR_1H)
        assert r.status_code == 200, r.text
        run_ids.append(r.json()["run_id"])
        await wait_for_status(c, {"completed"})
        paths = ["/api/v1/runs", "/api/v1/results", "/api/v1/status", "/api/v1/status/detailed"]
        paths += [p for run_id in run_ids for p in (f"/api/v1/runs/{run_id}", f"/api/v1/runs/{run_id}/results")]
        for path in paths:
            r = await c.get(path)
            assert r.status_code in (200, 404), (path, r.text)  # a refused live run has no results
            bodies.append(r.text)
        stored = (await c.get(f"/api/v1/runs/{run_ids[0]}")).json()["config"]
    database = await _database_text(settings.database_url)
    logs = [logging.Formatter().format(record) for record in caplog.records]
    assert any("INSERT INTO runs" in line for line in logs)  # SQL echo was on, parameters included
    assert stored["exchange_config"]["credentials"] == {"name": "main-account"}
    assert stored["exchange_config_dropped_keys"] > len(ccxt_credential_names())
    assert mark.count > 70  # distinct secret values sent
    assert mark.prefix not in database
    leaked = [line for line in logs if mark.prefix in line]
    assert not leaked, leaked[:3]
    leaked = [body for body in bodies if mark.prefix in body]
    assert not leaked, leaked[:1]


async def test_run_listing_of_100_runs_with_900_kb_exchange_configs_stays_small(db_settings: Settings) -> None:
    # The edge refuses big /run/* bodies, so most runs are rows written before the cap (900 KB each, as stored then).
    async with app_client(db_settings) as c:
        for _ in range(10):
            body = {**LIVE, "mode": "live", "exchange_config": {"note": "x" * 50_000, "sandbox": True}}
            r = await c.post("/api/v1/run/live", json=body)
            assert r.status_code in (422, 413), r.text
        store = c.app.state.run_store  # type: ignore[attr-defined]
        legacy = {**LIVE, "strategy_params": {}, "exchange_config": {"note": "x" * 900_000, "sandbox": True}}
        for _ in range(100 - await _count_runs(c)):
            await store.create(
                run_id=uuid.uuid4().hex,
                mode="paper",
                status="failed",
                config=legacy,
                strategy_name="TestStrategy",
                symbols=["BTC/USDT"],
                timeframe="1h",
                exchange="synthetic",
            )
        listing = await c.get("/api/v1/runs", params={"limit": 100})
    items = listing.json()["items"]
    assert len(items) == 100
    assert all(item["config"]["exchange_config"] == {"sandbox": True} for item in items)
    assert all(len(json.dumps(item["config"])) <= MAX_CONFIG_BYTES for item in items)
    assert len(listing.content) < 100 * 2_000  # was 90 MB before the allowlist


async def _count_runs(c: Any) -> int:
    return int((await c.get("/api/v1/runs", params={"limit": 1})).json()["total"])


async def test_runs_stored_before_the_allowlist_are_served_allowlisted_and_capped(db_settings: Settings) -> None:
    old = {
        "strategy_name": "TestStrategy",
        "exchange_config": {"apiKey": "old-clear-key", "secret": "***", "sandbox": True},
        "strategy_params": {"big": "y" * 100_000},
    }
    async with app_client(db_settings) as c:
        store = c.app.state.run_store  # type: ignore[attr-defined]
        run_id = uuid.uuid4().hex
        await store.create(
            run_id=run_id,
            mode="paper",
            status="failed",
            config=old,
            strategy_name="TestStrategy",
            symbols=["BTC/USDT"],
            timeframe="1h",
            exchange="synthetic",
        )
        listing = (await c.get("/api/v1/runs")).text
        one = (await c.get(f"/api/v1/runs/{run_id}")).json()["config"]
    assert "old-clear-key" not in listing and "y" * 100 not in listing
    assert one["exchange_config"] == {"sandbox": True} and one["exchange_config_dropped_keys"] == 2
    assert one["config_truncated"] is True and len(json.dumps(one)) <= MAX_CONFIG_BYTES


def test_an_echoed_body_with_thousands_of_fields_is_capped() -> None:
    stored = redact({f"field{i}": "v" * 200 for i in range(5000)})
    assert len(json.dumps(stored)) <= MAX_CONFIG_BYTES
    assert stored["config_truncated"] is True and stored["config_omitted_keys"] > 4900
