"""Rate limits and revocations shared by several server processes, through Redis or PostgreSQL.

Two apps on one backend stand for two processes (in-process apps in one test, and real server processes in the
last tests). "At once" means event-driven: a revocation's response is sent after its notice was published, and
the other process refuses the credential as soon as the notice arrives; the tests wait on that arrival (the
authenticator's invalidation event), with the database poller turned down to once an hour so it cannot be what
did it, and timeouts only as safety nets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import text

from auth_support import PASSWORD, SECRET, add_user, auth_client, login, run_cli
from cracktrader.auth import service
from cracktrader.auth.login_limiter import LoginLimiter
from cracktrader.auth.rate_limit import RateLimiter
from cracktrader.auth.shared import client_name
from cracktrader.auth.store import AuthStore
from cracktrader.db.engine import make_engine
from cracktrader.settings import Settings
from db_support import app_database
from web_support import ServerProcess

pytestmark = pytest.mark.anyio

REDIS_URL = "redis://127.0.0.1:6379/0"
# The poller would find any revocation within this; an hour means only a notice can have done it.
NO_POLLING_S = 3600.0
Shared = tuple[Settings, dict[str, Any]]


@contextlib.contextmanager
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test alone; its keys are deleted afterwards."""
    prefix = f"cracktrader-test:{uuid.uuid4().hex}:"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}); scripts/test.sh and CI start it", pytrace=False)
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(params=("redis", "postgresql"))
def shared(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Shared]:
    """A PostgreSQL database of the test's own, and the web settings that share limits through the backend."""
    with app_database("postgresql", monkeypatch) as settings:
        if request.param == "redis":
            with redis_prefix() as prefix:
                yield settings, {"redis_url": REDIS_URL, "redis_prefix": prefix}
        else:
            yield settings, {}


@contextlib.asynccontextmanager
async def two_apps(shared: Shared, **web: Any) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Two apps (two processes' worth of state) on the same database and shared backend."""
    settings, backend = shared
    async with auth_client(settings, **backend, **web) as a, auth_client(settings, **backend, **web) as b:
        yield a, b


def _auth(client: httpx.AsyncClient) -> Any:
    return client.app.state.auth  # type: ignore[attr-defined]


async def _api_key(client: httpx.AsyncClient, username: str) -> dict[str, str]:
    """A new user's API key header (made with its bearer token, whose allowance is separate)."""
    await add_user(client, username)
    tokens = await login(client, username)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    created = await client.post("/api/v1/auth/apikeys", json={"name": "bot"}, headers=bearer)
    assert created.status_code == 201, created.text
    return {"X-API-Key": created.json()["key"]}


def _assert_rate_limited(r: httpx.Response, per_minute: int) -> None:
    assert r.status_code == 429, r.text
    body = r.json()
    assert body["error"]["code"] == "RATE_LIMITED"
    assert body["error"]["details"]["limit_per_minute"] == per_minute
    wait = int(r.headers["Retry-After"])
    assert wait >= 1 and body["error"]["details"]["retry_after_s"] == wait


async def test_the_apps_say_which_backend_they_share(shared: Shared) -> None:
    async with two_apps(shared) as (a, b):
        expected = "redis" if shared[1] else "postgresql"
        assert _auth(a).shared.backend == _auth(b).shared.backend == expected


async def test_on_sqlite_the_limits_stay_in_the_process() -> None:
    async with auth_client() as c:
        assert _auth(c).shared.backend == "local"
        assert isinstance(_auth(c).rate_limiter, RateLimiter) and isinstance(_auth(c).limiter, LoginLimiter)


async def test_a_key_limited_to_two_a_minute_gets_two_across_both_apps(
    shared: Shared,
) -> None:
    # Two a minute refills one request every 30 s: far longer than the test, so the count is exact.
    async with two_apps(shared, rate_limit_per_minute=2) as (a, b):
        # The key is made with a bearer token: users and keys have separate allowances, so making it spends none
        # of the key's; but the user's own two are spent (login is free, creating the key is one request).
        key = await _api_key(a, "kim")
        assert (await a.get("/api/v1/auth/me", headers=key)).status_code == 200
        assert (await b.get("/api/v1/auth/me", headers=key)).status_code == 200
        _assert_rate_limited(await a.get("/api/v1/auth/me", headers=key), 2)
        _assert_rate_limited(await b.get("/api/v1/auth/me", headers=key), 2)


async def test_a_key_limited_to_100_a_minute_gets_100_across_both_apps(
    shared: Shared,
) -> None:
    async with two_apps(shared, rate_limit_per_minute=100) as (a, b):
        key = await _api_key(a, "lee")
        allowed, started = await _spend_alternately([a, b], key)
        _assert_limit_shared(allowed, started, 100)


async def _spend_alternately(clients: list[httpx.AsyncClient], key: dict[str, str]) -> tuple[int, float]:
    """Requests on each client in turn until one is refused: (how many were allowed, when the first was sent)."""
    started = time.monotonic()
    for n in range(1000):
        r = await clients[n % len(clients)].get("/api/v1/auth/me", headers=key)
        if r.status_code != 200:
            _assert_rate_limited(r, 100)
            return n, started
    raise AssertionError("1,000 requests and no 429: the limit is not shared")


def _assert_limit_shared(allowed: int, started: float, per_minute: int) -> None:
    """The burst is the limit, plus the refill (one every 60/limit s) earned while the requests were sent.

    Limits kept per process would have let each process serve `per_minute` (twice as many, alternating).
    """
    elapsed = time.monotonic() - started
    refilled = int(elapsed * per_minute / 60) + 1
    assert per_minute <= allowed <= per_minute + refilled, (allowed, elapsed)
    assert allowed < 2 * per_minute


async def test_a_logout_on_one_app_is_refused_on_the_other_at_once(shared: Shared) -> None:
    async with two_apps(shared, auth_revocation_poll_s=NO_POLLING_S) as (a, b):
        await add_user(a, "max")
        token = {"Authorization": f"Bearer {(await login(a, 'max'))['access_token']}"}
        assert (await b.get("/api/v1/auth/me", headers=token)).status_code == 200  # now cached on B
        authenticator, polls = _auth(b).authenticator, _auth(b).poller.polls
        generation = authenticator.generation
        assert (await a.post("/api/v1/auth/logout", headers=token)).status_code == 200
        async with asyncio.timeout(10):  # a safety net: the notice takes milliseconds
            await authenticator.wait_changed(generation)
        r = await b.get("/api/v1/auth/me", headers=token)
        assert r.status_code == 401 and r.json()["error"]["code"] == "INVALID_TOKEN"
        assert _auth(b).poller.polls == polls  # the notice did it, not a poll


async def test_a_key_revoked_on_one_app_is_refused_on_the_other_at_once(
    shared: Shared,
) -> None:
    async with two_apps(shared, auth_revocation_poll_s=NO_POLLING_S) as (a, b):
        await add_user(a, "nia")
        bearer = {"Authorization": f"Bearer {(await login(a, 'nia'))['access_token']}"}
        created = (await a.post("/api/v1/auth/apikeys", json={"name": "bot"}, headers=bearer)).json()
        key = {"X-API-Key": created["key"]}
        assert (await b.get("/api/v1/auth/me", headers=key)).status_code == 200
        generation = _auth(b).authenticator.generation
        assert (await a.delete(f"/api/v1/auth/apikeys/{created['id']}", headers=bearer)).status_code == 204
        async with asyncio.timeout(10):
            await _auth(b).authenticator.wait_changed(generation)
        assert (await b.get("/api/v1/auth/me", headers=key)).status_code == 401


async def test_a_user_disabled_from_the_cli_is_refused_on_both_apps_at_once(
    shared: Shared, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in shared[1].items():  # the CLI reads the same settings as the servers
        monkeypatch.setenv(f"CRACKTRADER_{name.upper()}", value)
    async with two_apps(shared, auth_revocation_poll_s=NO_POLLING_S) as (a, b):
        await add_user(a, "quinn")
        token = {"Authorization": f"Bearer {(await login(a, 'quinn'))['access_token']}"}
        generations = []
        for app in (a, b):
            assert (await app.get("/api/v1/auth/me", headers=token)).status_code == 200
            generations.append(_auth(app).authenticator.generation)
        await run_cli("users", "disable", "quinn")
        for app, generation in zip((a, b), generations, strict=True):
            async with asyncio.timeout(10):
                await _auth(app).authenticator.wait_changed(generation)
            assert (await app.get("/api/v1/auth/me", headers=token)).status_code == 401


@pytest.fixture
def postgres_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """A PostgreSQL database of the test's own, no Redis."""
    with app_database("postgresql", monkeypatch) as settings:
        yield settings


async def test_a_killed_postgresql_listener_listens_again_and_misses_nothing(postgres_only: Settings) -> None:
    settings = postgres_only
    async with two_apps((settings, {}), auth_revocation_poll_s=NO_POLLING_S) as (a, b):
        notices = _auth(b).shared.notices
        killed = notices.backend_pid
        engine = make_engine(settings.database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed})
        finally:
            await engine.dispose()
        deadline = time.monotonic() + 10  # a safety net: it listens again after half a second
        while notices.connections < 2:
            assert time.monotonic() < deadline, "the listener never came back"
            await asyncio.sleep(0.01)
        assert notices.backend_pid != killed
        await add_user(a, "ray")
        token = {"Authorization": f"Bearer {(await login(a, 'ray'))['access_token']}"}
        assert (await b.get("/api/v1/auth/me", headers=token)).status_code == 200
        generation = _auth(b).authenticator.generation
        assert (await a.post("/api/v1/auth/logout", headers=token)).status_code == 200
        async with asyncio.timeout(10):
            await _auth(b).authenticator.wait_changed(generation)
        assert (await b.get("/api/v1/auth/me", headers=token)).status_code == 401


@pytest.fixture
def redis_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[Shared]:
    """A PostgreSQL database of the test's own, and Redis under a prefix of the test's own."""
    with app_database("postgresql", monkeypatch) as settings, redis_prefix() as prefix:
        yield settings, {"redis_url": REDIS_URL, "redis_prefix": prefix}


async def test_killed_redis_listeners_subscribe_again_and_miss_nothing(redis_only: Shared) -> None:
    shared = redis_only
    async with two_apps(shared, auth_revocation_poll_s=NO_POLLING_S) as (a, b):
        admin = redis.Redis.from_url(REDIS_URL)
        try:
            name = client_name(shared[1]["redis_prefix"])
            listeners = [c["id"] for c in admin.client_list() if c["name"] == name and c["cmd"] == "subscribe"]
            assert len(listeners) == 2  # one per app, whatever the request load
            for client_id in listeners:
                admin.client_kill_filter(_id=client_id)
        finally:
            admin.close()
        deadline = time.monotonic() + 10  # a safety net: they subscribe again after half a second
        while _auth(a).shared.notices.connections < 2 or _auth(b).shared.notices.connections < 2:
            assert time.monotonic() < deadline, "the listeners never came back"
            await asyncio.sleep(0.01)
        await add_user(a, "sam")
        token = {"Authorization": f"Bearer {(await login(a, 'sam'))['access_token']}"}
        assert (await b.get("/api/v1/auth/me", headers=token)).status_code == 200
        generation = _auth(b).authenticator.generation
        assert (await a.post("/api/v1/auth/logout", headers=token)).status_code == 200
        async with asyncio.timeout(10):
            await _auth(b).authenticator.wait_changed(generation)
        assert (await b.get("/api/v1/auth/me", headers=token)).status_code == 401


@contextlib.asynccontextmanager
async def _from(client: httpx.AsyncClient, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the same app whose requests come from `address`."""
    transport = httpx.ASGITransport(app=client.app, client=(address, 4444))  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as other:
        yield other


async def test_a_lockout_earned_on_one_app_holds_on_the_other_and_spares_clean_addresses(shared: Shared) -> None:
    async with two_apps(shared) as (a, b):
        await add_user(a, "pat")
        async with _from(a, "203.0.113.7") as attacker_a, _from(b, "203.0.113.7") as attacker_b:
            for attacker in (attacker_a, attacker_b, attacker_a, attacker_b, attacker_a):  # 5 across both
                r = await attacker.post("/api/v1/auth/login", data={"username": "pat", "password": "guess-guess"})
                assert r.status_code == 401
            for attacker in (attacker_b, attacker_a):  # even the right password waits, on either app
                r = await attacker.post("/api/v1/auth/login", data={"username": "pat", "password": PASSWORD})
                assert r.status_code == 429 and r.json()["error"]["code"] == "RATE_LIMITED"
                assert 1 <= int(r.headers["Retry-After"]) <= 30
            # The real user, from an address that never failed, gets straight in on either app.
            assert (await login(b, "pat"))["access_token"] and (await login(a, "pat"))["access_token"]
            # An address spraying names is locked out by its own count, summed over both apps.
            for k in range(15):
                attacker = attacker_a if k % 2 else attacker_b
                await attacker.post("/api/v1/auth/login", data={"username": f"u{k}", "password": "guess-guess"})
            r = await attacker_b.post("/api/v1/auth/login", data={"username": "someone", "password": "guess-guess"})
            assert r.status_code == 429


# Two real server processes ------------------------------------------------------------------------------------


def _server(tmp_path: Path, name: str, backend: dict[str, Any]) -> ServerProcess:
    env = {
        "CRACKTRADER_AUTH_MODE": "on",
        "JWT_SECRET_KEY": SECRET,
        "CRACKTRADER_RATE_LIMIT_PER_MINUTE": "100",
        "CRACKTRADER_AUTH_REVOCATION_POLL_S": str(NO_POLLING_S),
    }
    if backend:
        env["CRACKTRADER_REDIS_URL"] = backend["redis_url"]
        env["CRACKTRADER_REDIS_PREFIX"] = backend["redis_prefix"]
    return ServerProcess(env, tmp_path / f"{name}.log")


async def test_two_server_processes_share_the_limit_and_logouts(shared: Shared, tmp_path: Path) -> None:
    settings, backend = shared
    first, second = _server(tmp_path, "a", backend), _server(tmp_path, "b", backend)
    try:
        await asyncio.gather(asyncio.to_thread(first.start), asyncio.to_thread(second.start))
        engine = make_engine(settings.database_url)
        try:
            await service.create_user(store=AuthStore(engine), username="ola", password="correct horse battery")
        finally:
            await engine.dispose()
        async with httpx.AsyncClient(base_url=first.base_url) as a, httpx.AsyncClient(base_url=second.base_url) as b:
            tokens = await login(a, "ola")
            bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
            created = await a.post("/api/v1/auth/apikeys", json={"name": "bot"}, headers=bearer)
            key = {"X-API-Key": created.json()["key"]}
            allowed, started = await _spend_alternately([a, b], key)
            _assert_limit_shared(allowed, started, 100)

            assert (await b.get("/api/v1/auth/me", headers=bearer)).status_code == 200
            assert (await a.post("/api/v1/auth/logout", headers=bearer)).status_code == 200
            # B drops its cache when the notice arrives (no poll for an hour); ask until it has, 10 s at most.
            deadline = time.monotonic() + 10
            while (r := await b.get("/api/v1/auth/me", headers=bearer)).status_code == 200:
                assert time.monotonic() < deadline, "the logout never reached the other process"
                await asyncio.sleep(0.005)
            assert r.status_code == 401
    finally:
        first.stop()
        second.stop()
