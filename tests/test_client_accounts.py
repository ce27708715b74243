"""The Python SDK's account methods (login, refresh, logout, me, API keys) and metrics, against a live server."""

from __future__ import annotations

import asyncio

import pytest

from auth_support import PASSWORD, SECRET
from cracktrader.auth import service
from cracktrader.auth.store import AuthStore
from cracktrader.client import (
    ApiKeyCreated,
    AsyncCrackTraderAPI,
    AuthenticationError,
    CrackTraderAPI,
    PermissionDeniedError,
)
from cracktrader.db.engine import make_engine
from cracktrader.settings import get_settings
from web_support import LiveServer, live_server


async def _create_user(username: str) -> None:
    store = AuthStore(make_engine(get_settings().database_url))
    try:
        await service.create_user(store=store, username=username, password=PASSWORD)
    finally:
        await store._engine.dispose()


def _auth_server() -> LiveServer:
    return LiveServer(auth_mode="on", jwt_secret_key=SECRET, rate_limit_per_minute=100_000)


def test_login_keeps_the_token_then_a_key_it_creates_works_until_revoked_and_logout_drops_it() -> None:
    with _auth_server() as srv, CrackTraderAPI(srv.base_url) as api:
        asyncio.run(_create_user("ana"))
        with pytest.raises(AuthenticationError):
            api.get_me()
        tokens = api.login("ana", PASSWORD)
        me = api.get_me()
        refreshed = api.refresh(tokens.refresh_token)
        after_refresh = api.get_me()
        key = api.create_api_key("sdk", scopes=["read", "trade"])
        listed = api.list_api_keys()
        with CrackTraderAPI(srv.base_url, api_key=key.key) as by_key:
            key_me = by_key.get_me()
            with pytest.raises(PermissionDeniedError):
                by_key.create_api_key("more")  # a key cannot mint keys
            with by_key.stream_status() as events:
                snapshot = events.recv(timeout=30)
            api.revoke_api_key(key.id)
            with pytest.raises(AuthenticationError):
                by_key.get_status()
        out = api.logout()
        with pytest.raises(AuthenticationError):
            api.get_me()
    assert tokens.token_type == "bearer" and me.username == "ana" and me.auth == "token" and me.auth_mode == "on"
    assert refreshed.refresh_token != tokens.refresh_token and after_refresh.username == "ana"
    assert isinstance(key, ApiKeyCreated) and key.key.startswith("ct_") and key.scopes == ["read", "trade"]
    assert [k.id for k in listed.items] == [key.id] and "key" not in (listed.items[0].model_extra or {})
    assert key_me.auth == "api_key" and key_me.api_key_id == key.id
    assert snapshot.type == "snapshot" and out.revoked >= 1


def test_async_client_logs_in_reads_me_and_logs_out() -> None:
    async def scenario(base_url: str) -> tuple[str, int, str]:
        await _create_user("bo")
        async with AsyncCrackTraderAPI(base_url) as api:
            await api.login("bo", PASSWORD)
            me = await api.get_me()
            key = await api.create_api_key("async")
            await api.revoke_api_key(key.id)
            out = await api.logout()
            try:
                await api.get_me()
            except AuthenticationError as exc:
                return me.username, out.revoked, exc.code
        raise AssertionError("the token still worked after logout")

    with _auth_server() as srv:
        username, revoked, code = asyncio.run(scenario(srv.base_url))
    assert username == "bo" and revoked >= 1 and code == "NOT_AUTHENTICATED"


def test_get_metrics_returns_the_prometheus_text_and_me_is_the_local_admin_with_auth_off() -> None:
    with live_server() as srv, CrackTraderAPI(srv.base_url) as api:
        api.get_health()
        metrics = api.get_metrics()
        me = api.get_me()
    assert metrics.startswith("# HELP ") and "cracktrader_" in metrics
    assert me.auth_mode == "off" and me.auth == "local"
