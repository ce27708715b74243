"""Stored exchange credentials: sealed at rest, validated against ccxt's fields, never shown, used by live sessions.

The API runs in-process on both databases; `test` and the live sessions reach the fake venue with the real ccxt
client, on its sandbox site.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from cracktrader.db.credential_store import CredentialStore
from cracktrader.db.engine import make_engine
from cracktrader.db.migrate import upgrade
from cracktrader.db.secret_box import KEY_FILE, SecretBox, SecretKeyError
from cracktrader.exchanges.credentials import ExchangeCredentials, credentials_for
from cracktrader.settings import Settings
from fakes.binance import exchange_options_for
from fakes.trading import TradingVenue
from test_live_sessions import (
    LEASE_T0,
    SERVER_B,
    SYMBOL,
    T0,
    TTL_S,
    crash,
    server,
    until,
    venue_orders,
    venue_ready,
)
from test_secrets import _database_text
from web_support import app_client, wait_for_status, with_test_strategies

pytestmark = pytest.mark.anyio

# Distinctive values, so that a search for them finds only a leak.
KEY_A, SECRET_A = "ak-3f9d1c7e5b2a4d6f8e0c", "sk-9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e"
KEY_B, SECRET_B = "ak-7e6d5c4b3a2f1e0d9c8b", "sk-1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d"
SECRETS = (KEY_A, SECRET_A, KEY_B, SECRET_B)
API = "/api/v1/credentials"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def venue() -> Iterator[TradingVenue]:
    keys = {KEY_A: SECRET_A, KEY_B: SECRET_B}
    with TradingVenue(now_ms=T0 + 30_000, balances={"USDT": "10000", "BTC": "0"}, api_keys=keys) as fake:
        yield fake


def on_venue(settings: Settings, venue: TradingVenue) -> Settings:
    """`settings` with binance (main and sandbox) served by the fake venue."""
    options = exchange_options_for(venue.base_url)
    options["binance"]["sandbox_base_url"] = venue.sandbox_base_url
    return with_test_strategies(settings.model_copy(update={"exchange_options": options}))


def live_body(**exchange_config: Any) -> dict[str, Any]:
    return {
        "strategy_name": "BuyAndHold",
        "strategy_params": {"size": 0.5},
        "symbols": [SYMBOL],
        "timeframe": "1m",
        "exchange": "binance",
        "mode": "live",
        "exchange_config": {"credentials": "main", "sandbox": True, "risk": {"capital": 1_000.0}, **exchange_config},
    }


# ---------------------------------------------------------------- the key


def test_the_key_file_is_made_once_readable_only_by_its_owner_and_opens_what_it_sealed(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    first = SecretBox.from_settings(settings)
    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = SecretBox.from_settings(settings)
    assert second.key_id == first.key_id
    sealed = first.seal(b"plain", b"row")
    assert second.open(sealed, b"row") == b"plain"
    assert b"plain" not in sealed


def test_a_key_file_others_may_read_is_refused_with_the_chmod_to_run(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    SecretBox.from_settings(settings)
    os.chmod(tmp_path / KEY_FILE, 0o644)
    with pytest.raises(SecretKeyError, match="chmod 600"):
        SecretBox.from_settings(settings)


def test_the_environment_key_wins_and_a_short_one_is_refused(tmp_path: Path) -> None:
    from_env = SecretBox.from_settings(Settings(data_dir=tmp_path, secret_key=SecretStr("k" * 32)))
    assert not (tmp_path / KEY_FILE).exists()
    assert from_env.key_id != SecretBox.from_settings(Settings(data_dir=tmp_path)).key_id
    with pytest.raises(SecretKeyError, match="at least 32 characters"):
        SecretBox.from_settings(Settings(data_dir=tmp_path, secret_key=SecretStr("short")))


async def test_a_ciphertext_copied_to_another_row_does_not_open(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{(tmp_path / 'c.db').as_posix()}"
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    try:
        store = CredentialStore(engine, SecretBox.from_settings(Settings(data_dir=tmp_path)))
        creds = ExchangeCredentials("binance", {"apiKey": KEY_A, "secret": SECRET_A})
        await store.add(1, "main", creds)
        await store.add(2, "main", ExchangeCredentials("binance", {"apiKey": KEY_B, "secret": SECRET_B}))
        assert dict((await store.resolve(1, "main")).values) == {"apiKey": KEY_A, "secret": SECRET_A}
        from sqlalchemy import text

        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE exchange_credentials SET ciphertext = (SELECT ciphertext FROM exchange_credentials "
                     "WHERE user_id = 1) WHERE user_id = 2")
            )  # fmt: skip
        with pytest.raises(Exception, match="do not open"):
            await store.resolve(2, "main")
    finally:
        await engine.dispose()


def test_the_fields_are_checked_against_ccxts_required_credentials() -> None:
    assert sorted(credentials_for("okx", {"apiKey": "k", "secret": "s", "passphrase": "p"}).values) == [
        "apiKey",
        "password",
        "secret",
    ]
    with pytest.raises(Exception, match="needs password") as missing:
        credentials_for("okx", {"apiKey": "k", "secret": "s"})
    assert getattr(missing.value, "details", {})["missing"] == ["password"]
    assert "apiKey=k" not in repr(credentials_for("binance", {"apiKey": "k", "secret": "s"}))


# ---------------------------------------------------------------- the API


async def test_add_list_rotate_test_and_delete_through_the_api(venue: TradingVenue, tmp_path: Path) -> None:
    async with app_client(on_venue(Settings(data_dir=tmp_path), venue)) as c:
        created = await c.post(API, json={"name": "main", "exchange": "binance", "apiKey": KEY_A, "secret": SECRET_A})
        assert created.status_code == 201, created.text
        assert set(created.json()) == {"name", "exchange", "created_at", "last_used_at", "rotated_at"}
        assert created.json()["last_used_at"] is None

        duplicate = await c.post(API, json={"name": "main", "exchange": "binance", "apiKey": "x", "secret": "y"})
        assert (duplicate.status_code, duplicate.json()["error"]["code"]) == (409, "DUPLICATE_NAME")

        tested = await c.post(f"{API}/main/test", json={"sandbox": True})
        assert tested.status_code == 200, tested.text
        assert tested.json()["ok"] is True and tested.json()["code"] == "OK"
        assert venue.sites_used() == {"sandbox"}

        listed = (await c.get(API)).json()["credentials"]
        assert [(x["name"], x["exchange"]) for x in listed] == [("main", "binance")]
        assert listed[0]["last_used_at"] is not None

        rotated = await c.post(f"{API}/main/rotate", json={"apiKey": KEY_A, "secret": "not-the-secret"})
        assert rotated.status_code == 200 and rotated.json()["rotated_at"] is not None
        refused = (await c.post(f"{API}/main/test", json={"sandbox": True})).json()
        assert (refused["ok"], refused["code"]) == (False, "AUTH_FAILED")
        put = await c.put(f"{API}/main", json={"apiKey": KEY_B, "secret": SECRET_B})
        assert put.status_code == 200, put.text
        assert (await c.post(f"{API}/main/test", json={"sandbox": True})).json()["ok"] is True

        assert (await c.delete(f"{API}/main")).status_code == 204
        gone = await c.delete(f"{API}/main")
        assert (gone.status_code, gone.json()["error"]["code"]) == (404, "CREDENTIALS_NOT_FOUND")
        assert (await c.get(API)).json() == {"credentials": []}


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"name": "m", "exchange": "binance", "apiKey": "k"}, 422, "INVALID_CREDENTIALS", "secret"),
        ({"name": "m", "exchange": "binance", "apiKey": "k", "secret": "s", "uid": "u"}, 422, "INVALID_CREDENTIALS",
         "uid"),
        ({"name": "m", "exchange": "nosuchexchange", "apiKey": "k", "secret": "s"}, 400, "UNKNOWN_EXCHANGE", None),
        ({"name": "m", "exchange": "binance", "apiKey": "k", "secret": "s\x00"}, 422, "VALIDATION_ERROR", None),
        ({"name": "m", "exchange": "binance", "apiKey": "k", "secret": "s" * 4097}, 422, "VALIDATION_ERROR", None),
        ({"name": "x" * 65, "exchange": "binance", "apiKey": "k", "secret": "s"}, 422, "VALIDATION_ERROR", None),
        ({"name": "a/b", "exchange": "binance", "apiKey": "k", "secret": "s"}, 422, "VALIDATION_ERROR", None),
        ({"name": "m", "exchange": "binance", "apiKey": "k", "secret": "s", "urls": "x"}, 422, "VALIDATION_ERROR",
         None),
    ],
)  # fmt: skip
async def test_bad_credentials_bodies_are_refused_with_the_fields_named(
    body: dict[str, Any], status: int, code: str, field: str | None
) -> None:
    async with app_client() as c:
        r = await c.post(API, json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
        if field is not None:
            assert field in r.json()["error"]["message"]
        assert (await c.get(API)).json() == {"credentials": []}


async def test_a_lone_surrogate_in_a_secret_is_refused() -> None:
    async with app_client() as c:
        raw = '{"name": "m", "exchange": "binance", "apiKey": "k", "secret": "\\ud800"}'
        r = await c.post(API, content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text


async def test_with_auth_on_each_user_sees_and_uses_only_their_own_credentials() -> None:
    from auth_support import auth_client, bearer

    async with auth_client() as c:
        alice, bob = await bearer(c, "alice"), await bearer(c, "bob")
        body = {"name": "main", "exchange": "binance", "apiKey": KEY_A, "secret": SECRET_A}
        assert (await c.post(API, json=body, headers=alice)).status_code == 201
        assert (await c.get(API, headers=bob)).json() == {"credentials": []}
        secrets = {"apiKey": KEY_B, "secret": SECRET_B}
        for method, path, sent in (
            ("POST", f"{API}/main/test", {"sandbox": True}),
            ("DELETE", f"{API}/main", None),
            ("POST", f"{API}/main/rotate", secrets),
        ):
            r = await c.request(method, path, headers=bob, json=sent)
            assert (r.status_code, r.json()["error"]["code"]) == (404, "CREDENTIALS_NOT_FOUND"), (method, path)
        body_b = {**body, "apiKey": KEY_B, "secret": SECRET_B}
        assert (await c.post(API, json=body_b, headers=bob)).status_code == 201  # the same name, another owner
        assert [x["name"] for x in (await c.get(API, headers=alice)).json()["credentials"]] == ["main"]
        assert (await c.get(API)).status_code == 401


# ---------------------------------------------------------------- a lost key


async def test_a_lost_secret_key_is_said_at_start_and_in_health(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = Settings(data_dir=tmp_path, secret_key=SecretStr("o" * 40))
    async with app_client(old) as c:
        r = await c.post(API, json={"name": "main", "exchange": "binance", "apiKey": KEY_A, "secret": SECRET_A})
        assert r.status_code == 201
        assert (await c.get("/api/v1/health")).json()["checks"]["credentials"]["status"] == "ok"
    caplog.set_level(logging.INFO)
    new = Settings(data_dir=tmp_path, secret_key=SecretStr("n" * 40))
    async with app_client(new) as c:
        started = [r.getMessage() for r in caplog.records if "cannot be read with the current key" in r.getMessage()]
        assert started and "CRACKTRADER_SECRET_KEY" in started[0]
        health = (await c.get("/api/v1/health")).json()
        check = health["checks"]["credentials"]
        assert health["status"] == "degraded"
        assert (check["status"], check["unreadable"]) == ("fail", 1)
        assert "CRACKTRADER_SECRET_KEY" in check["detail"]
        tested = await c.post(f"{API}/main/test")
        assert (tested.status_code, tested.json()["error"]["code"]) == (409, "CREDENTIALS_UNREADABLE")
        assert (await c.delete(f"{API}/main")).status_code == 204
        assert (await c.get("/api/v1/health")).json()["checks"]["credentials"]["status"] == "ok"


# ---------------------------------------------------------------- live sessions


async def test_stored_credentials_next_to_an_endpoint_override_are_refused(venue: TradingVenue, tmp_path: Path) -> None:
    async with app_client(on_venue(Settings(data_dir=tmp_path), venue)) as c:
        r = await c.post(API, json={"name": "main", "exchange": "binance", "apiKey": KEY_A, "secret": SECRET_A})
        assert r.status_code == 201
        for extra in (
            {"sandbox_base_url": "http://127.0.0.1:9"},
            {"urls": {"api": "http://127.0.0.1:9"}},
            {"hostname": "127.0.0.1:9"},
            {"proxies": "http://127.0.0.1:9"},
            {"httpsProxy": "http://127.0.0.1:9"},
            {"apiKey": KEY_B},
        ):
            refused = await c.post("/api/v1/run/live", json=live_body(**extra))
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"]["details"]["refused"] == list(extra)
        missing = await c.post("/api/v1/run/live", json={**live_body(), "exchange_config": {
            **live_body()["exchange_config"], "credentials": "other"}})  # fmt: skip
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "CREDENTIALS_NOT_FOUND")
    assert venue_orders(venue) == []


async def test_no_secret_is_in_a_response_a_log_line_or_a_row_after_every_use_and_a_live_session(
    db_settings: Settings, venue: TradingVenue, caplog: pytest.LogCaptureFixture
) -> None:
    settings = on_venue(db_settings.model_copy(update={"sqlalchemy_echo": True}), venue)
    caplog.set_level(logging.DEBUG)
    bodies: list[str] = []
    async with app_client(settings) as c:
        c.app.state.sessions.clock = venue.clock  # type: ignore[attr-defined]

        async def call(method: str, path: str, **kwargs: Any) -> Any:
            r = await c.request(method, path, **kwargs)
            bodies.append(r.text)
            return r

        created = await call("POST", API, json={"name": "main", "exchange": "binance", "apiKey": KEY_A,
                                                "secret": SECRET_A})  # fmt: skip
        assert created.status_code == 201
        await call("POST", API, json={"name": "bad", "exchange": "binance", "apiKey": KEY_A})  # 422
        assert (await call("POST", f"{API}/main/test", json={"sandbox": True})).json()["ok"] is True
        await call("POST", f"{API}/main/rotate", json={"apiKey": KEY_B, "secret": SECRET_B})
        assert (await call("POST", f"{API}/main/test", json={"sandbox": True})).json()["ok"] is True
        await call("GET", API)

        started = await call("POST", "/api/v1/run/live", json=live_body())
        assert started.status_code == 200, started.text
        run_id = started.json()["run_id"]
        await wait_for_status(c, {"running"})
        await venue_ready(venue)
        await venue.step(30)  # the candle closes: BuyAndHold buys
        for _ in range(2000):
            detailed = await call("GET", "/api/v1/status/detailed")
            if detailed.json()["trade_count"] == 1:
                break
            await asyncio.sleep(0.01)
        assert detailed.json()["trade_count"] == 1
        assert (await call("POST", "/api/v1/run/stop", json={"flatten": True})).json()["status"] == "stopped"
        record = (await call("GET", f"/api/v1/runs/{run_id}")).json()
        for path in ("/api/v1/runs", "/api/v1/results", "/api/v1/status", "/api/v1/health", API):
            await call("GET", path)
        assert (await call("GET", API)).json()["credentials"][0]["last_used_at"] is not None
        rows_while_stored = await _database_text(settings.database_url)
        assert (await call("DELETE", f"{API}/main")).status_code == 204
    rows_after = await _database_text(settings.database_url)

    assert record["config"]["exchange_config"]["credentials"] == "main"
    assert [o.side for o in venue_orders(venue)] == ["BUY", "SELL"]
    assert venue.sites_used() == {"sandbox"}
    logs = "\n".join(logging.Formatter().format(r) for r in caplog.records)
    assert "INSERT INTO exchange_credentials" in logs  # SQL echo was on, parameters included
    assert "main" in rows_while_stored
    for secret in SECRETS:
        for where, haystack in (("responses", "\n".join(bodies)), ("logs", logs), ("rows", rows_while_stored),
                                ("rows after delete", rows_after)):  # fmt: skip
            assert secret not in haystack, (secret, where)


async def test_a_session_on_stored_credentials_resumes_after_a_crash_without_waiting_for_keys(
    venue: TradingVenue, target: Any, tmp_path: Path
) -> None:
    settings = on_venue(Settings(data_dir=tmp_path, server_lease_ttl_s=TTL_S), venue)
    engine = target.engine()
    store = CredentialStore(engine, SecretBox.from_settings(settings))
    await store.add(0, "main", ExchangeCredentials("binance", {"apiKey": KEY_A, "secret": SECRET_A}))
    from cracktrader.runs.config import LiveConfig

    config = LiveConfig.model_validate(live_body())
    async with server(target, settings, venue.clock) as a:
        run_a = a.get((await a.start(config))["run_id"])
        await until(lambda: run_a.status == "running", "running")
        first_use = (await store.get(0, "main")).last_used_at
        await crash(a, run_a)

    later = LEASE_T0 + timedelta(seconds=TTL_S + 1)
    async with server(target, settings, venue.clock, server_id=SERVER_B, lease=later) as b:
        assert await b.scan() == [run_a.run_id]
        run_b = b.get(run_a.run_id)
        assert run_b.snapshot()["phase"] != "awaiting_credentials"
        await until(lambda: run_b.status == "running", "running")
        assert run_b.live is not None and not run_b.live.awaiting_credentials
        await b.stop(run_b.run_id)
    used_again = (await store.get(0, "main")).last_used_at
    await engine.dispose()
    assert first_use is not None and used_again is not None and used_again > first_use


# ---------------------------------------------------------------- the CLI


def test_the_cli_reads_secrets_from_stdin_never_from_argv(venue: TradingVenue, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from cracktrader.cli import app
    from cracktrader.settings import get_settings

    options = exchange_options_for(venue.base_url)
    options["binance"]["sandbox_base_url"] = venue.sandbox_base_url
    monkeypatch.setenv("CRACKTRADER_EXCHANGE_OPTIONS", json.dumps(options))
    get_settings.cache_clear()
    runner = CliRunner()
    add_help = runner.invoke(app, ["credentials", "add", "--help"]).output
    assert "--secret" not in add_help and "--api-key" not in add_help
    assert runner.invoke(app, ["credentials", "add", "main", "--exchange", "binance", "--secret", "x"]).exit_code == 2

    added = runner.invoke(app, ["credentials", "add", "main", "--exchange", "binance"],
                          input=json.dumps({"apiKey": KEY_A, "secret": SECRET_A}))  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "stored credentials main (binance)" in added.output
    missing = runner.invoke(app, ["credentials", "add", "other", "--exchange", "binance"], input=f"apiKey={KEY_A}\n")
    assert missing.exit_code == 2 and "needs secret" in missing.output

    tested = runner.invoke(app, ["credentials", "test", "main", "--sandbox"])
    assert tested.exit_code == 0, tested.output
    rotated = runner.invoke(app, ["credentials", "rotate", "main"], input=f"apiKey={KEY_A}\nsecret=wrong\n")
    assert rotated.exit_code == 0, rotated.output
    failed = runner.invoke(app, ["credentials", "test", "main", "--sandbox"])
    assert failed.exit_code == 1 and "AUTH_FAILED" in failed.output

    listed = runner.invoke(app, ["credentials", "list"])
    assert listed.exit_code == 0 and listed.output.startswith("main\tbinance\t")
    assert runner.invoke(app, ["credentials", "delete", "main", "--exchange", "okx"]).exit_code == 2
    assert runner.invoke(app, ["credentials", "delete", "main"]).exit_code == 0
    assert "no stored credentials" in runner.invoke(app, ["credentials", "list"]).output
    outputs = added.output + tested.output + rotated.output + failed.output + listed.output
    assert all(s not in outputs for s in SECRETS)


# ---------------------------------------------------------------- the SDK


def test_the_sdk_stores_tests_rotates_and_deletes_credentials_on_a_real_server(
    venue: TradingVenue, tmp_path: Path
) -> None:
    from cracktrader.client import CrackTraderAPI, NotFoundError, ValidationError
    from web_support import LiveServer

    with LiveServer(on_venue(Settings(data_dir=tmp_path), venue)) as srv, CrackTraderAPI(srv.base_url) as api:
        info = api.create_credentials("main", "binance", apiKey=KEY_A, secret=SECRET_A)
        assert (info.name, info.exchange, info.last_used_at) == ("main", "binance", None)
        assert api.test_credentials("main", sandbox=True).ok is True
        assert [c.name for c in api.list_credentials().credentials] == ["main"]
        api.rotate_credentials("main", apiKey=KEY_A, secret="wrong")
        check = api.test_credentials("main", sandbox=True)
        assert (check.ok, check.code) == (False, "AUTH_FAILED")
        with pytest.raises(ValidationError, match="needs secret"):
            api.create_credentials("other", "binance", apiKey=KEY_A)
        api.delete_credentials("main")
        with pytest.raises(NotFoundError):
            api.delete_credentials("main")
        assert api.list_credentials().credentials == []
