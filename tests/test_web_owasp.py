"""The OWASP API Security Top 10 (2023) against our API, with auth on unless a test says otherwise.

Also covered elsewhere: API1 runs and presets per user (test_auth_api, test_web_strategies); API2 expired, forged,
alg=none tokens and refresh reuse (test_auth_api); API4 body caps incl. chunked and WebSocket subscription caps
(test_web_security, test_web_ws); API8 Host/Origin checks, CORS and tracebacks (test_web_security).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from websockets.asyncio.client import connect

from auth_support import PASSWORD, SECRET, add_user, auth_client, bearer, login, wait_done
from cracktrader.auth import service
from cracktrader.auth.store import AuthStore
from cracktrader.auth.tokens import TokenSettings, create_access_token
from cracktrader.db.engine import make_engine
from cracktrader.db.models import Base, RunResultRecord
from cracktrader.settings import Settings, get_settings
from cracktrader.web.log_redaction import QuerySecretFilter
from cracktrader.web.server.main import ServerConfigError, check_server_config
from web_support import YEAR_1H, LiveServer, app_client

pytestmark = pytest.mark.anyio
EXCHANGE_SECRETS = {"apiKey": "AKIA-live-7f3a9c", "secret": "s3cr3t-9b2c-e41d", "password": "pa55phrase-41x"}
LIVE = {
    "strategy_name": "TestStrategy",
    "symbols": ["BTC/USDT"],
    "exchange": "synthetic",
    "mode": "paper",
    "exchange_config": {**EXCHANGE_SECRETS, "sandbox": True},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


class _Capture(logging.Handler):
    """Every log record of every logger, formatted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def captured_logs() -> Iterator[_Capture]:
    """Capture all logging at DEBUG, including uvicorn's and SQLAlchemy's."""
    handler = _Capture()
    root = logging.getLogger()
    names = ("cracktrader", "uvicorn.error", "uvicorn.access")
    levels = {n: logging.getLogger(n).level for n in names}
    root.addHandler(handler)
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
        logging.getLogger(name).addHandler(handler)  # uvicorn's loggers may not propagate
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
            logging.getLogger(name).removeHandler(handler)


async def _database_text(url: str) -> str:
    """Every row of every table as text, run results decompressed, so a secret anywhere would show."""
    engine = make_engine(url)
    parts: list[str] = []
    try:
        async with engine.connect() as conn:
            for table in Base.metadata.sorted_tables:
                for row in (await conn.execute(select(table))).mappings():
                    parts.append(repr(dict(row)))
            for doc in (await conn.execute(select(RunResultRecord.document))).scalars():
                parts.append(zlib.decompress(doc).decode())
    finally:
        await engine.dispose()
    return "\n".join(parts)


async def _user_token(username: str, role: str = "trader") -> str:
    """A user created in the configured database, and an access token for them."""
    store = AuthStore(make_engine(get_settings().database_url))
    try:
        user = await service.create_user(store=store, username=username, password=PASSWORD, role=role)
    finally:
        await store._engine.dispose()
    return create_access_token(user_id=user.id, role=user.role, settings=TokenSettings(secret=SECRET))


# API1 Broken object level authorization ------------------------------------------------------------------------
async def _collect_until_done(ws: Any, seen: list[dict[str, Any]]) -> None:
    while True:
        message = json.loads(await ws.recv())
        seen.append(message)
        if message["channel"] == "status" and message["data"]["status"] == "completed":
            return


async def test_api1_stream_events_of_another_users_run_show_only_its_lifecycle() -> None:
    channels = {"action": "subscribe", "channels": ["status", "trades", "orders", "equity"]}
    with LiveServer(auth_mode="on", jwt_secret_key=SECRET, rate_limit_per_minute=0) as server:
        alice, bob = await _user_token("alice"), await _user_token("bob")
        async with (
            connect(f"{server.ws_url}/api/v1/ws", additional_headers={"Authorization": f"Bearer {alice}"}) as a_ws,
            connect(f"{server.ws_url}/api/v1/ws", additional_headers={"Authorization": f"Bearer {bob}"}) as b_ws,
        ):
            for ws in (a_ws, b_ws):
                await ws.send(json.dumps(channels))
                assert json.loads(await ws.recv())["channel"] == "subscribed"
                assert json.loads(await ws.recv())["channel"] == "status"
            async with httpx.AsyncClient(base_url=server.base_url) as http:
                r = await http.post("/api/v1/run/backtest", json=YEAR_1H, headers={"Authorization": f"Bearer {alice}"})
                assert r.status_code == 200, r.text
            run_id = r.json()["run_id"]
            mine: list[dict[str, Any]] = []
            theirs: list[dict[str, Any]] = []
            async with asyncio.timeout(60):
                await asyncio.gather(_collect_until_done(a_ws, mine), _collect_until_done(b_ws, theirs))
    assert {m["channel"] for m in mine} >= {"status", "trades", "orders", "equity"}
    assert mine[-1]["data"]["run_id"] == run_id and mine[-1]["data"]["value"] > 0
    assert {m["channel"] for m in theirs} == {"status"}
    for message in theirs:
        data = message["data"]
        assert data["run_id"] is None and data["value"] is None and data["cash"] is None and data["trade_count"] == 0
    assert run_id not in json.dumps(theirs)


async def test_api1_another_users_api_key_cannot_be_seen_or_revoked() -> None:
    async with auth_client() as c:
        alice = await bearer(c, "alice")
        bob = await bearer(c, "bob")
        created = await c.post("/api/v1/auth/apikeys", json={"name": "bot", "scopes": ["read"]}, headers=alice)
        assert created.status_code == 201, created.text
        key_id, key = created.json()["id"], created.json()["key"]
        assert (await c.get("/api/v1/auth/apikeys", headers=bob)).json()["items"] == []
        assert (await c.delete(f"/api/v1/auth/apikeys/{key_id}", headers=bob)).status_code == 404
        me = await c.get("/api/v1/auth/me", headers={"X-API-Key": key})
        assert me.status_code == 200 and me.json()["username"] == "alice"


# API2 Broken authentication --------------------------------------------------------------------------------------
async def test_api2_refresh_and_access_tokens_are_not_interchangeable() -> None:
    async with auth_client() as c:
        await add_user(c, "ivy")
        tokens = await login(c, "ivy")
        r = await c.get("/api/v1/status", headers={"Authorization": f"Bearer {tokens['refresh_token']}"})
        assert r.status_code == 401 and _code(r) == "INVALID_TOKEN"
        r = await c.post("/api/v1/auth/refresh", json={"refresh_token": tokens["access_token"][:256]})
        assert r.status_code in (401, 422)
        assert (await c.get("/api/v1/status", headers={"X-API-Key": tokens["access_token"]})).status_code == 401


async def test_api2_disabled_users_and_revoked_keys_are_shut_out_at_once() -> None:
    async with auth_client(auth_cache_ttl_s=0) as c:
        headers = await bearer(c, "jay")
        created = (await c.post("/api/v1/auth/apikeys", json={"name": "k", "scopes": ["read"]}, headers=headers)).json()
        key = {"X-API-Key": created["key"]}
        assert (await c.get("/api/v1/runs", headers=key)).status_code == 200
        assert (await c.delete(f"/api/v1/auth/apikeys/{created['id']}", headers=headers)).status_code == 204
        assert (await c.get("/api/v1/runs", headers=key)).status_code == 401
        await service.set_user_active(store=c.app.state.auth.store, username="jay", active=False)  # type: ignore[attr-defined]
        assert (await c.get("/api/v1/runs", headers=headers)).status_code == 401


async def test_api2_unknown_users_take_as_long_to_refuse_as_wrong_passwords() -> None:
    async with auth_client() as c:
        await add_user(c, "kim")

        async def timed(username: str) -> float:
            t0 = time.perf_counter()
            r = await c.post("/api/v1/auth/login", data={"username": username, "password": "wrong password"})
            assert r.status_code == 401 and r.json()["error"]["message"] == "Incorrect username or password"
            return time.perf_counter() - t0

        # Under the per-username lockout threshold (5), and distinct unknown names.
        known = sorted([await timed("kim") for _ in range(4)])[1]
        unknown = sorted([await timed(f"ghost{k}") for k in range(4)])[1]
        # Both pay for one Argon2 verification; a missing user must not answer measurably faster.
        assert 0.5 < unknown / known < 2.0, (known, unknown)


# API3 Broken object property level authorization ----------------------------------------------------------------
async def test_api3_secrets_are_never_returned_stored_or_logged(db_settings: Settings) -> None:
    with captured_logs() as logs:
        # Echo logs every SQL statement with its parameters: the strictest place for a secret to leak.
        settings = db_settings.model_copy(update={"sqlalchemy_echo": True})
        async with auth_client(settings) as c:
            await add_user(c, "sam")
            tokens = await login(c, "sam")
            headers = {"Authorization": f"Bearer {tokens['access_token']}"}
            key = (
                await c.post("/api/v1/auth/apikeys", json={"name": "bot", "scopes": ["read"]}, headers=headers)
            ).json()
            bodies: list[str] = []
            r = await c.post("/api/v1/run/live", json=LIVE, headers=headers)
            assert r.status_code == 200, r.text  # a paper session in sam's slot
            live_id = r.json()["run_id"]
            bodies.append((await c.get("/api/v1/status", headers=headers)).text)
            assert (await c.post("/api/v1/run/stop", headers=headers)).json()["status"] == "stopped"
            assert (await c.delete("/api/v1/run/reset", headers=headers)).status_code == 200
            # Validation errors echo input; a missing field echoes the whole body.
            without_name = {k: v for k, v in LIVE.items() if k != "strategy_name"}
            for bad in (without_name, {**LIVE, "mode": "bogus"}, {**LIVE, "exchange_config": "apiKey=x"}):
                r = await c.post("/api/v1/run/live", json=bad, headers=headers)
                assert r.status_code == 422
                bodies.append(r.text)
            assert (await c.post("/api/v1/run/backtest", json=YEAR_1H, headers=headers)).status_code == 200
            await wait_done(c, headers)
            for path in (
                "/api/v1/runs",
                f"/api/v1/runs/{live_id}",
                "/api/v1/results",
                "/api/v1/status/detailed",
                "/api/v1/auth/me",
                "/api/v1/auth/apikeys",
                "/api/v1/strategies",
                "/api/v1/health",
            ):
                r = await c.get(path, headers=headers)
                assert r.status_code == 200, path
                bodies.append(r.text)
            stored = (await c.get(f"/api/v1/runs/{live_id}", headers=headers)).json()["config"]["exchange_config"]
            assert stored == {"sandbox": True}
        database = await _database_text(settings.database_url)
    password_hash = "$argon2"
    secrets = [*EXCHANGE_SECRETS.values(), PASSWORD, tokens["refresh_token"], key["key"].split(".", 1)[1]]
    for secret in secrets:
        assert not any(secret in body for body in bodies), secret
        assert secret not in database, secret
        assert not any(secret in line for line in logs.lines), secret
    assert not any(password_hash in body for body in bodies)
    assert "'exchange_config_dropped_keys': 3" in database and any("INSERT INTO runs" in line for line in logs.lines)


async def test_api3_clients_cannot_set_owner_or_server_fields() -> None:
    async with auth_client() as c:
        alice = await bearer(c, "alice")
        r = await c.post("/api/v1/strategies", json={"name": "x", "owner_id": 99}, headers=alice)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "owner_id"]
        r = await c.post("/api/v1/run/backtest", json={**YEAR_1H, "user_id": 99}, headers=alice)
        assert r.status_code == 422
        r = await c.post("/api/v1/auth/apikeys", json={"name": "k", "scopes": ["read"], "user_id": 99}, headers=alice)
        me = (await c.get("/api/v1/auth/me", headers=alice)).json()
        assert r.status_code == 422 or (await c.get("/api/v1/auth/apikeys", headers=alice)).json()["total"] == 1
        assert me["username"] == "alice" and "password_hash" not in me


# API4 Unrestricted resource consumption -------------------------------------------------------------------------
async def test_api4_each_user_and_key_has_its_own_request_allowance() -> None:
    async with auth_client(rate_limit_per_minute=5) as c:
        alice = await bearer(c, "alice")
        for _ in range(5):
            assert (await c.get("/api/v1/runs", headers=alice)).status_code == 200
        r = await c.get("/api/v1/runs", headers=alice)
        assert r.status_code == 429 and _code(r) == "RATE_LIMITED" and r.json()["detail"]
        assert 1 <= int(r.headers["Retry-After"]) <= 12 and r.json()["error"]["details"]["limit_per_minute"] == 5
        bob = await bearer(c, "bob")
        assert (await c.get("/api/v1/runs", headers=bob)).status_code == 200
        store = c.app.state.auth.store  # type: ignore[attr-defined]
        key, _ = await service.create_api_key_for(store=store, username="alice", name="bot", scopes=["read"])
        assert (await c.get("/api/v1/runs", headers={"X-API-Key": key})).status_code == 200
        assert (await c.get("/api/v1/health")).status_code == 200  # public, not counted
    async with app_client() as c:  # the auth-off local operator is never limited
        for _ in range(150):
            assert (await c.get("/api/v1/runs")).status_code == 200


async def test_api4_page_sizes_are_capped() -> None:
    async with app_client() as c:
        for path in (
            "/api/v1/runs?limit=1001",
            "/api/v1/strategies?limit=1001",
            "/api/v1/results?limit=100001",
            "/api/v1/results?max_points=1000001",
        ):
            r = await c.get(path)
            assert r.status_code == 422 and _code(r) == "VALIDATION_ERROR", path
        r = await c.post("/api/v1/strategies", json={"name": "big", "parameters": {f"p{k}": k for k in range(101)}})
        assert r.status_code == 422
        r = await c.post("/api/v1/run/backtest", json={**YEAR_1H, "symbols": [f"S{k}/USDT" for k in range(51)]})
        assert r.status_code == 422


# API5 Broken function level authorization -----------------------------------------------------------------------
async def test_api5_a_viewer_reads_but_cannot_start_stop_or_change_anything() -> None:
    async with auth_client() as c:
        viewer = await bearer(c, "vic", role="viewer")
        assert (await c.get("/api/v1/runs", headers=viewer)).status_code == 200
        for method, path, body in (
            ("POST", "/api/v1/run/backtest", YEAR_1H),
            ("POST", "/api/v1/run/live", LIVE),
            ("POST", "/api/v1/run/stop", None),
            ("DELETE", "/api/v1/run/reset", None),
            ("POST", "/api/v1/strategies", {"name": "x"}),
            ("PUT", "/api/v1/strategies/1", {"name": "x"}),
            ("DELETE", "/api/v1/strategies/1", None),
            ("DELETE", "/api/v1/runs/abc", None),
        ):
            r = await c.request(method, path, json=body, headers=viewer)
            assert r.status_code == 403 and _code(r) == "FORBIDDEN", (method, path)
        r = await c.post("/api/v1/auth/apikeys", json={"name": "k", "scopes": ["read", "trade"]}, headers=viewer)
        assert r.status_code in (403, 422)


# API6 Unrestricted access to sensitive business flows -----------------------------------------------------------
async def test_api6_real_money_needs_the_live_scope() -> None:
    async with auth_client() as c:
        trader = await bearer(c, "tom")
        made = await c.post("/api/v1/auth/apikeys", json={"name": "k", "scopes": ["read", "trade"]}, headers=trader)
        key = {"X-API-Key": made.json()["key"]}
        r = await c.post("/api/v1/run/live", json={**LIVE, "mode": "live"}, headers=key)
        assert r.status_code == 403 and r.json()["error"]["details"]["required_scope"] == "live"
        r = await c.post("/api/v1/run/live", json=LIVE, headers=key)
        assert r.status_code == 200, r.text  # paper needs only `trade`
        assert (await c.post("/api/v1/run/stop", headers=key)).json()["status"] == "stopped"


# API7 Server side request forgery -------------------------------------------------------------------------------
async def test_api7_requests_cannot_point_the_server_at_other_hosts() -> None:
    async with app_client() as c:
        r = await c.post("/api/v1/run/backtest", json={**YEAR_1H, "exchange": "http://169.254.169.254/latest"})
        assert r.status_code == 400 and _code(r) == "UNKNOWN_EXCHANGE"
        r = await c.post(
            "/api/v1/run/backtest", json={**YEAR_1H, "exchange_config": {"urls": {"api": "http://10.0.0.1"}}}
        )
        assert r.status_code == 422  # backtests take exchange settings from the server's environment only


# API8 Security misconfiguration ---------------------------------------------------------------------------------
async def test_api8_security_headers_on_every_kind_of_response() -> None:
    async with auth_client(rate_limit_per_minute=1) as c:
        headers = await bearer(c, "uma")
        responses = [
            await c.get("/api/v1/health"),
            await c.get("/api/v1/status"),  # 401
            await c.get("/api/v1/status", headers=headers),
            await c.get("/api/v1/status", headers=headers),  # 429
            await c.get("/api/v1/nope"),  # 404
            await c.post("/api/v1/auth/login", json={}),  # 422
            await c.get("/ui"),
        ]
        assert [r.status_code for r in responses] == [200, 401, 200, 429, 404, 422, 200]
        for r in responses:
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["Referrer-Policy"] == "no-referrer"
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in responses[-1].headers["Content-Security-Policy"]
    with pytest.raises(ServerConfigError, match="Refusing to bind"):
        check_server_config(host="0.0.0.0", workers=1, insecure=False, auth_enabled=False)


def test_api8_credentials_in_websocket_urls_never_reach_the_logs() -> None:
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]', None, None)
    record.args = ("127.0.0.1:5000", "/api/v1/ws/status?token=eyJhbGc.secret.sig&x=1")
    QuerySecretFilter().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "WebSocket /api/v1/ws/status?token=***&x=1" [accepted]'


async def test_api8_a_websocket_token_in_the_url_is_logged_redacted() -> None:
    with LiveServer(auth_mode="on", jwt_secret_key=SECRET) as server, captured_logs() as logs:
        token = await _user_token("wes")
        async with connect(f"{server.ws_url}/api/v1/ws/status?token={token}") as ws:
            assert json.loads(await ws.recv())["type"] == "snapshot"
    assert any("token=***" in line for line in logs.lines), logs.lines
    assert not any(token in line for line in logs.lines)


# API9 Improper inventory management -----------------------------------------------------------------------------
async def test_api9_every_api_route_is_documented_and_versioned() -> None:
    async with app_client() as c:
        schema = (await c.get("/openapi.json")).json()
        documented = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops}
        app = c.app  # type: ignore[attr-defined]
        for route in app.routes:
            path = getattr(route, "path", "")
            methods = getattr(route, "methods", None) or set()
            if not path.startswith("/api/v1") or not methods:
                continue  # WebSockets are described in docs/api.md
            for method in methods - {"HEAD"}:
                assert (method, path) in documented, (method, path)
        meta = (await c.get("/api/v1/meta")).json()
        deprecated = meta["deprecations"][0]
        r = await c.get(deprecated["path"])
        assert r.headers["Deprecation"] and r.headers["Sunset"] and r.headers["X-Cracktrader-API-Version"] == "v1"
