"""Auth through the API: login (form and JSON), lockouts, refresh rotation, logout, revocations reaching HTTP and
open streams, me, bad tokens, API keys, scopes, per-user runs and resets, health for anonymous callers,
WebSockets, and the server's bind rules."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from auth_support import PASSWORD, SECRET, add_user, auth_client, bearer, login, polls_after, run_cli, wait_done
from cracktrader.auth import service
from cracktrader.auth.store import AuthStore
from cracktrader.auth.tokens import TokenSettings, create_access_token
from cracktrader.db.engine import make_engine
from cracktrader.settings import Settings, get_settings
from cracktrader.web.app import create_app
from cracktrader.web.server.main import ServerConfigError, check_server_config
from web_support import SLOW_RUN, YEAR_1H, LiveServer, app_client, released_run, web_settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _error(r: object) -> str:
    return str(r.json()["error"]["code"])  # type: ignore[attr-defined]


async def test_login_with_the_oauth2_form_and_with_json() -> None:
    async with auth_client() as c:
        await add_user(c, "Alice@Example.com")
        form = await login(c, "alice@example.com")
        assert form["token_type"] == "bearer" and form["expires_in"] == 30 * 60
        assert form["access_token"] and form["refresh_token"]
        r = await c.post("/api/v1/auth/login", json={"username": "ALICE@example.com", "password": PASSWORD})
        assert r.status_code == 200 and set(r.json()) == {"access_token", "token_type", "refresh_token", "expires_in"}
        me = await c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
        assert me.status_code == 200
        assert me.json() | {"user_id": 0} == {
            "user_id": 0,
            "username": "alice@example.com",
            "role": "trader",
            "scopes": ["live", "read", "trade"],
            "auth": "token",
            "api_key_id": None,
            "auth_mode": "on",
        }


async def test_bad_logins_share_one_answer_and_lock_out_with_retry_after() -> None:
    async with auth_client() as c:
        await add_user(c, "bob")
        wrong = await c.post("/api/v1/auth/login", data={"username": "bob", "password": "nope-nope"})
        unknown = await c.post("/api/v1/auth/login", json={"username": "nobody", "password": "nope-nope"})
        for r in (wrong, unknown):
            assert r.status_code == 401 and _error(r) == "INVALID_CREDENTIALS"
            assert r.json()["error"]["message"] == "Incorrect username or password"
            assert "nope" not in r.text
        for _ in range(4):
            await c.post("/api/v1/auth/login", data={"username": "bob", "password": "nope-nope"})
        locked = await c.post("/api/v1/auth/login", data={"username": "bob", "password": PASSWORD})
        assert locked.status_code == 429 and _error(locked) == "RATE_LIMITED"
        assert int(locked.headers["Retry-After"]) >= 1
        bad = await c.post("/api/v1/auth/login", data={"username": "bob"})
        assert bad.status_code == 422 and "password" not in bad.json()["error"]["details"]


async def test_refresh_rotates_and_reuse_revokes_the_family() -> None:
    async with auth_client() as c:
        await add_user(c, "carol")
        first = await login(c, "carol")
        second = (await c.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})).json()
        assert second["refresh_token"] != first["refresh_token"] and second["access_token"]
        replay = await c.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert replay.status_code == 401 and _error(replay) == "INVALID_TOKEN"
        # The thief's replay ended the login: the legitimate newer token is revoked too.
        after = await c.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
        assert after.status_code == 401
        garbage = await c.post("/api/v1/auth/refresh", json={"refresh_token": "x" * 43})
        assert garbage.status_code == 401


async def test_logout_revokes_the_refresh_token() -> None:
    async with auth_client() as c:
        await add_user(c, "dave")
        tokens = await login(c, "dave")
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        out = await c.post("/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}, headers=headers)
        assert out.status_code == 200 and out.json() == {"revoked": 1}
        r = await c.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert r.status_code == 401
        assert (await c.post("/api/v1/auth/logout")).status_code == 401


def _auth_header(tokens: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def test_logout_revokes_the_access_token_at_once_and_leaves_other_logins(db_settings: Settings) -> None:
    async with auth_client(db_settings) as c:
        await add_user(c, "lou")
        one, two = await login(c, "lou"), await login(c, "lou")
        assert (await c.get("/api/v1/auth/me", headers=_auth_header(one))).status_code == 200
        out = await c.post(
            "/api/v1/auth/logout", json={"refresh_token": one["refresh_token"]}, headers=_auth_header(one)
        )
        assert out.status_code == 200 and out.json() == {"revoked": 1}
        for path in ("/api/v1/auth/me", "/api/v1/status"):
            r = await c.get(path, headers=_auth_header(one))
            assert r.status_code == 401 and _error(r) == "INVALID_TOKEN", path
        assert (await c.get("/api/v1/auth/me", headers=_auth_header(two))).status_code == 200
        # Logging out with just the access token ends that login too.
        assert (await c.post("/api/v1/auth/logout", headers=_auth_header(two))).json()["revoked"] >= 1
        assert (await c.get("/api/v1/auth/me", headers=_auth_header(two))).status_code == 401
        assert (await c.get("/api/v1/auth/me", headers=_auth_header(await login(c, "lou")))).status_code == 200


async def test_cli_revocations_reach_a_running_server_within_two_polls(db_settings: Settings) -> None:
    async with auth_client(db_settings) as c:
        auth = c.app.state.auth  # type: ignore[attr-defined]
        assert auth.revocation_poll_s <= 0.5  # two polls: within the 1 s target
        await add_user(c, "cleo")
        token = _auth_header(await login(c, "cleo"))
        created = (await c.post("/api/v1/auth/apikeys", json={"name": "bot"}, headers=token)).json()
        key = {"X-API-Key": created["key"]}
        for headers in (token, key):  # both cached now
            assert (await c.get("/api/v1/status", headers=headers)).status_code == 200

        await run_cli("apikeys", "revoke", str(created["id"]))
        await polls_after(auth)
        r = await c.get("/api/v1/status", headers=key)
        assert r.status_code == 401 and _error(r) == "INVALID_TOKEN"
        assert (await c.get("/api/v1/status", headers=token)).status_code == 200

        await run_cli("users", "reset-password", "cleo", stdin="a new password here\n")
        await polls_after(auth)
        assert (await c.get("/api/v1/status", headers=token)).status_code == 401
        token = _auth_header(await login(c, "cleo", "a new password here"))
        assert (await c.get("/api/v1/status", headers=token)).status_code == 200

        await run_cli("users", "disable", "cleo")
        await polls_after(auth)
        assert (await c.get("/api/v1/status", headers=token)).status_code == 401


async def test_failed_logins_from_one_address_do_not_lock_the_user_out_of_another() -> None:
    async with auth_client() as c:
        await add_user(c, "vera")
        transport = httpx.ASGITransport(app=c.app, client=("203.0.113.7", 4444))  # type: ignore[attr-defined]
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as attacker:
            for _ in range(5):
                r = await attacker.post("/api/v1/auth/login", data={"username": "vera", "password": "guess-guess"})
                assert r.status_code == 401
            for password in ("guess-guess", PASSWORD):
                r = await attacker.post("/api/v1/auth/login", data={"username": "vera", "password": password})
                assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
            # The real user, from an address that has not failed, gets straight in.
            assert (await login(c, "vera"))["access_token"]
            # The attacker's address is limited by itself, whatever names it tries.
            for k in range(15):
                await attacker.post("/api/v1/auth/login", data={"username": f"u{k}", "password": "guess-guess"})
            r = await attacker.post("/api/v1/auth/login", data={"username": "someone", "password": "guess-guess"})
            assert r.status_code == 429
            assert (await login(c, "vera"))["access_token"]


async def _close_code(ws: Any) -> int:
    """Read until the server closes the socket (10 s at most); its close code."""
    async with asyncio.timeout(10):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            return int(closed.rcvd.code)


async def test_open_streams_close_with_1008_when_their_credential_is_revoked(db_settings: Settings) -> None:
    with LiveServer(db_settings, auth_mode="on", jwt_secret_key=SECRET) as server:
        store = AuthStore(make_engine(db_settings.database_url))
        try:
            await service.create_user(store=store, username="sam", password=PASSWORD)
        finally:
            await store._engine.dispose()
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            first, second = await login(http, "sam"), await login(http, "sam")
            created = (
                await http.post("/api/v1/auth/apikeys", json={"name": "feed"}, headers=_auth_header(first))
            ).json()
            status = f"{server.ws_url}/api/v1/ws/status?token="
            async with (
                connect(status + first["access_token"]) as by_login,
                connect(status + second["access_token"]) as by_other_login,
                connect(f"{server.ws_url}/api/v1/ws", additional_headers={"X-API-Key": created["key"]}) as by_key,
            ):
                for ws in (by_login, by_other_login):
                    assert json.loads(await ws.recv())["type"] == "snapshot"
                await by_key.send(json.dumps({"action": "ping"}))
                assert json.loads(await by_key.recv())["channel"] == "pong"
                # Logout through this server: at once.
                body = {"refresh_token": first["refresh_token"]}
                assert (await http.post("/api/v1/auth/logout", json=body, headers=_auth_header(first))).is_success
                assert await _close_code(by_login) == 1008
                # From the CLI, another process: at the server's next polls.
                await run_cli("apikeys", "revoke", str(created["id"]))
                assert await _close_code(by_key) == 1008
                await run_cli("users", "disable", "sam")
                assert await _close_code(by_other_login) == 1008


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_expired_forged_and_unsigned_tokens_are_rejected() -> None:
    async with auth_client() as c:
        uid = await add_user(c, "erin")
        settings = TokenSettings(secret=SECRET)
        expired = create_access_token(user_id=uid, role="trader", settings=settings, now=time.time() - 3600)
        forged = create_access_token(user_id=uid, role="admin", settings=TokenSettings(secret="f" * 40))
        claims = {"sub": str(uid), "role": "admin", "iat": int(time.time()), "exp": int(time.time()) + 600}
        unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({**claims, 'iss': 'cracktrader', 'typ': 'access'})}."
        hs512 = jwt.encode({**claims, "iss": "cracktrader", "typ": "access"}, SECRET, algorithm="HS512")
        for token in (expired, forged, unsigned, hs512, "not-a-jwt"):
            r = await c.get("/api/v1/status", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401 and _error(r) == "INVALID_TOKEN", token
            assert r.headers["WWW-Authenticate"] == "Bearer"
        valid = create_access_token(user_id=uid, role="trader", settings=settings)
        assert (await c.get("/api/v1/status", headers={"Authorization": f"Bearer {valid}"})).status_code == 200


async def test_every_api_route_needs_credentials_but_health_stays_public() -> None:
    async with auth_client() as c:
        for path in (
            "/api/v1/status",
            "/api/v1/runs",
            "/api/v1/results",
            "/api/v1/strategies",
            "/api/v1/meta",
            "/api/v1/metrics",
            "/metrics",
            "/api/v1/auth/me",
            "/api/v1/status/detailed",
        ):
            r = await c.get(path)
            assert r.status_code == 401 and _error(r) == "NOT_AUTHENTICATED", path
        r = await c.post("/api/v1/run/backtest", json=YEAR_1H)
        assert r.status_code == 401
        for path in ("/health", "/api/v1/health"):
            anon = (await c.get(path)).json()
            assert anon["status"] == "healthy" and anon["checks"] == {} and anon["metrics"] == {}
        headers = await bearer(c, "frank", role="viewer")
        detailed = (await c.get("/health", headers=headers)).json()
        assert detailed["checks"]["database"]["status"] == "ok"


async def test_api_keys_are_shown_once_listed_without_secret_and_revocable() -> None:
    async with auth_client() as c:
        headers = await bearer(c, "gina")
        created = await c.post("/api/v1/auth/apikeys", json={"name": "bot", "scopes": ["read"]}, headers=headers)
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        prefix, _, secret = key.partition(".")
        assert prefix == created.json()["prefix"] and len(secret) >= 40
        listed = (await c.get("/api/v1/auth/apikeys", headers=headers)).json()["items"]
        assert [k["prefix"] for k in listed] == [prefix] and "key" not in listed[0] and secret not in json.dumps(listed)
        use = {"X-API-Key": key}
        assert (await c.get("/api/v1/status", headers=use)).status_code == 200
        me = (await c.get("/api/v1/auth/me", headers=use)).json()
        assert me["auth"] == "api_key" and me["scopes"] == ["read"]
        # Read-only key: cannot start a run, nor mint keys.
        r = await c.post("/api/v1/run/backtest", json=YEAR_1H, headers=use)
        assert r.status_code == 403 and _error(r) == "FORBIDDEN"
        assert (await c.post("/api/v1/auth/apikeys", json={"name": "x"}, headers=use)).status_code == 403
        assert (await c.get("/api/v1/status", headers={"X-API-Key": prefix + ".wrong" + secret})).status_code == 401
        assert (await c.delete(f"/api/v1/auth/apikeys/{created.json()['id']}", headers=headers)).status_code == 204
        r = await c.get("/api/v1/status", headers=use)
        assert r.status_code == 401 and _error(r) == "INVALID_TOKEN"


async def test_scopes_viewer_cannot_start_and_a_key_without_live_cannot_go_live() -> None:
    async with auth_client() as c:
        viewer = await bearer(c, "vic", role="viewer")
        assert (await c.get("/api/v1/runs", headers=viewer)).status_code == 200
        for method, path in (
            ("POST", "/api/v1/run/backtest"),
            ("POST", "/api/v1/run/stop"),
            ("DELETE", "/api/v1/run/reset"),
            ("DELETE", "/api/v1/runs/" + "a" * 32),
        ):
            r = await c.request(method, path, json=YEAR_1H if "backtest" in path else None, headers=viewer)
            assert r.status_code == 403 and _error(r) == "FORBIDDEN", path
        # A viewer cannot grant itself more than it has.
        r = await c.post("/api/v1/auth/apikeys", json={"name": "k", "scopes": ["trade"]}, headers=viewer)
        assert r.status_code == 403
        trader = await bearer(c, "tess")
        key = (
            await c.post("/api/v1/auth/apikeys", json={"name": "paper", "scopes": ["read", "trade"]}, headers=trader)
        ).json()["key"]
        live = {**YEAR_1H, "mode": "live"}
        live.pop("start_date"), live.pop("end_date"), live.pop("initial_cash")
        r = await c.post("/api/v1/run/live", json=live, headers={"X-API-Key": key})
        assert r.status_code == 403 and r.json()["error"]["details"]["required_scope"] == "live"
        paper = await c.post("/api/v1/run/live", json={**live, "mode": "paper"}, headers={"X-API-Key": key})
        assert paper.status_code == 200, paper.text  # paper needs only `trade`
        stopped = await c.post("/api/v1/run/stop", headers={"X-API-Key": key})
        assert stopped.json()["status"] == "stopped"


async def test_runs_belong_to_their_user() -> None:
    async with auth_client() as c:
        alice = await bearer(c, "alice")
        bob = await bearer(c, "bob")
        admin = await bearer(c, "root", role="admin")
        r = await c.post("/api/v1/run/backtest", json=YEAR_1H, headers=alice)
        assert r.status_code == 200, r.text
        run_id = r.json()["run_id"]
        await wait_done(c, alice)
        # Bob's runner slot is his own: idle, never Alice's numbers, results or history.
        status = (await c.get("/api/v1/status", headers=bob)).json()
        assert status["status"] == "idle" and status["run_id"] is None and status["value"] is None
        assert (await c.get("/api/v1/results", headers=bob)).status_code == 404
        assert (await c.get("/api/v1/runs", headers=bob)).json()["total"] == 0
        for path in (f"/api/v1/runs/{run_id}", f"/api/v1/runs/{run_id}/results", f"/api/v1/runs/{run_id}/trades.csv"):
            assert (await c.get(path, headers=bob)).status_code == 404, path
        assert (await c.delete(f"/api/v1/runs/{run_id}", headers=bob)).status_code == 404
        detailed = (await c.get("/api/v1/status/detailed", headers=bob)).json()
        assert detailed["recent_trades"] == [] and detailed["equity_curve"] == []
        # Alice and the admin see it.
        assert (await c.get("/api/v1/results", headers=alice)).json()["run_id"] == run_id
        assert (await c.get("/api/v1/runs", headers=alice)).json()["total"] == 1
        assert (await c.get(f"/api/v1/runs/{run_id}", headers=admin)).status_code == 200
        assert (await c.get("/api/v1/status", headers=alice)).json()["run_id"] == run_id
        assert (await c.delete(f"/api/v1/runs/{run_id}", headers=alice)).status_code == 204


async def test_each_user_resets_only_their_own_runner_slot() -> None:
    async with auth_client() as c:
        alice = await bearer(c, "alice")
        bob = await bearer(c, "bob")
        admin = await bearer(c, "root", role="admin")
        run_id = (await c.post("/api/v1/run/backtest", json=YEAR_1H, headers=alice)).json()["run_id"]
        await wait_done(c, alice)
        for other in (bob, admin):
            reset = await c.delete("/api/v1/run/reset", headers=other)
            assert reset.status_code == 200 and reset.json()["run_id"] is None  # their own, idle slot
            assert (await c.get("/api/v1/status", headers=alice)).json()["run_id"] == run_id  # untouched
        done = await c.delete("/api/v1/run/reset", headers=alice)
        assert done.status_code == 200 and done.json()["run_id"] == run_id
        assert (await c.get("/api/v1/status", headers=alice)).json()["status"] == "idle"


async def test_two_users_run_backtests_at_once_each_in_their_own_slot(tmp_path: Path) -> None:
    async with auth_client() as c:
        alice = await bearer(c, "alice")
        bob = await bearer(c, "bob")
        release = tmp_path / "release"
        body = released_run(SLOW_RUN, release)
        ids = [(await c.post("/api/v1/run/backtest", json=body, headers=who)).json()["run_id"] for who in (alice, bob)]
        statuses = [(await c.get("/api/v1/status", headers=who)).json() for who in (alice, bob)]
        again = await c.post("/api/v1/run/backtest", json=body, headers=alice)
        stop_bob = await c.post("/api/v1/run/stop", headers=bob)
        alice_after = (await c.get("/api/v1/status", headers=alice)).json()
        release.touch()
        await wait_done(c, alice)
    assert ids[0] != ids[1] and [s["run_id"] for s in statuses] == ids
    assert all(s["status"] in ("starting", "running") for s in statuses)
    assert again.status_code == 409 and again.json()["error"]["code"] == "RUN_ALREADY_ACTIVE"
    assert stop_bob.json() == {**stop_bob.json(), "run_id": ids[1], "status": "stopped"}
    assert alice_after["run_id"] == ids[0] and alice_after["status"] in ("starting", "running")


async def test_auth_off_is_the_local_admin_and_login_needs_a_secret() -> None:
    async with app_client() as c:
        me = (await c.get("/api/v1/auth/me")).json()
        assert me["auth"] == "local" and me["role"] == "admin" and me["auth_mode"] == "off"
        r = await c.post("/api/v1/auth/login", data={"username": "a", "password": "b"})
        assert r.status_code == 501 and _error(r) == "AUTH_DISABLED"
        assert "/api/v1/status" in c.app.state.fast_get  # type: ignore[attr-defined]
    async with auth_client() as c:
        assert "/api/v1/status" not in c.app.state.fast_get  # type: ignore[attr-defined]


async def test_websockets_need_a_token_when_auth_is_on() -> None:
    with LiveServer(auth_mode="on", jwt_secret_key=SECRET) as server:
        store = AuthStore(make_engine(get_settings().database_url))
        try:
            user = await service.create_user(store=store, username="wes", password=PASSWORD)
        finally:
            await store._engine.dispose()
        token = create_access_token(user_id=user.id, role=user.role, settings=TokenSettings(secret=SECRET))
        for path in ("/api/v1/ws/status?token=bogus", "/api/v1/ws?token=ct_nope.nope"):
            with pytest.raises(InvalidStatus) as info:
                async with connect(server.ws_url + path):
                    pass
            assert info.value.response.status_code == 403, path
        # Without handshake credentials the first message must carry them; anything else closes with 1008.
        for path in ("/api/v1/ws/status", "/api/v1/ws"):
            for first in ('{"action": "subscribe", "channel": "status"}', '{"action": "auth", "token": "bogus"}', "hi"):
                async with connect(server.ws_url + path) as ws:
                    await ws.send(first)
                    with pytest.raises(ConnectionClosed) as closed:
                        await ws.recv()
                    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008, (path, first)
        async with connect(f"{server.ws_url}/api/v1/ws/status") as ws:
            await ws.send(json.dumps({"action": "auth", "token": token}))
            assert json.loads(await ws.recv())["type"] == "snapshot"
        async with connect(f"{server.ws_url}/api/v1/ws") as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            await ws.send(json.dumps({"action": "subscribe", "channel": "status"}))
            assert json.loads(await ws.recv())["channel"] == "subscribed"
        async with connect(f"{server.ws_url}/api/v1/ws/status?token={token}") as ws:
            assert json.loads(await ws.recv())["type"] == "snapshot"
        async with connect(f"{server.ws_url}/api/v1/ws", additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            await ws.send(json.dumps({"action": "ping"}))
            assert json.loads(await ws.recv())["channel"] == "pong"


def test_non_loopback_bind_is_allowed_with_auth_and_refused_without_a_secret() -> None:
    assert check_server_config(host="0.0.0.0", workers=1, insecure=False, auth_enabled=True, jwt_secret=SECRET) == []
    with pytest.raises(ServerConfigError, match="JWT_SECRET_KEY"):
        check_server_config(host="0.0.0.0", workers=1, insecure=False, auth_enabled=True, jwt_secret=None)
    with pytest.raises(ServerConfigError, match="too short"):
        check_server_config(host="127.0.0.1", workers=1, insecure=False, auth_enabled=True, jwt_secret="short")
    with pytest.raises(ServerConfigError, match="Refusing to bind"):
        check_server_config(host="0.0.0.0", workers=1, insecure=False, auth_enabled=False)
    with pytest.raises(RuntimeError, match="JWT_SECRET_KEY"):
        create_app(get_settings(), web_settings(auth_mode="on"))


async def test_seed_004_environment_variables_configure_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from cracktrader.web.config import WebSettings

    monkeypatch.setenv("CRACKTRADER_AUTH_MODE", "on")
    monkeypatch.setenv("JWT_SECRET_KEY", SECRET)
    monkeypatch.setenv("JWT_ALGORITHM", "HS512")
    monkeypatch.setenv("JWT_EXPIRATION_MINUTES", "5")
    monkeypatch.setenv("CORS_ORIGINS", '["http://dash.test"]')
    app = create_app(get_settings(), WebSettings())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
            await service.create_user(store=app.state.auth.store, username="env", password=PASSWORD)
            tokens = (await c.post("/api/v1/auth/login", data={"username": "env", "password": PASSWORD})).json()
            assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 300
            assert jwt.get_unverified_header(tokens["access_token"])["alg"] == "HS512"
            claims = jwt.decode(tokens["access_token"], SECRET, algorithms=["HS512"], options={"verify_aud": False})
            assert claims["exp"] - claims["iat"] == 300
            r = await c.get("/api/v1/health", headers={"Origin": "http://dash.test"})
            assert r.headers["Access-Control-Allow-Origin"] == "http://dash.test"
