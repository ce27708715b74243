"""Helpers for auth tests: an app with auth on, users made through the service, the CLI as another process,
and waiting on conditions (never sleep-and-hope)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from cracktrader.auth import service
from cracktrader.settings import Settings
from web_support import app_client

SECRET = "test-secret-" + "0123456789abcdef" * 4
PASSWORD = "correct horse battery"


@contextlib.asynccontextmanager
async def auth_client(settings: Settings | None = None, **web: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client for an app with CRACKTRADER_AUTH_MODE=on (rate limit raised unless a test sets it)."""
    web.setdefault("rate_limit_per_minute", 100_000)
    async with app_client(settings, auth_mode="on", jwt_secret_key=SECRET, **web) as client:
        yield client


async def add_user(client: httpx.AsyncClient, username: str, role: str = "trader") -> int:
    """Create a user in the app's database."""
    store = client.app.state.auth.store  # type: ignore[attr-defined]
    user = await service.create_user(store=store, username=username, password=PASSWORD, role=role)
    return user.id


async def login(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> dict[str, Any]:
    """Log in with the OAuth2 form; the token response."""
    r = await client.post("/api/v1/auth/login", data={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def bearer(client: httpx.AsyncClient, username: str, role: str = "trader") -> dict[str, str]:
    """Create a user, log in, and return the Authorization header."""
    await add_user(client, username, role)
    tokens = await login(client, username)
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def wait_done(client: httpx.AsyncClient, headers: dict[str, str], timeout: float = 60.0) -> dict[str, Any]:
    """Poll /status (with credentials) until the run finishes."""
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = (await client.get("/api/v1/status", headers=headers)).json()
        if status["status"] in ("completed", "failed", "stopped"):
            return status
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.02)


async def run_cli(*args: str, stdin: str | None = None) -> str:
    """Run `python -m cracktrader ARGS` as a separate process on the configured database; its stdout."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cracktrader",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    assert proc.returncode == 0, (args, out.decode(), err.decode())
    return out.decode()


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "") -> float:
    """Await `condition()` every 10 ms until it holds; the seconds it took. Fails after `timeout`."""
    start = time.monotonic()
    while not await condition():
        assert time.monotonic() - start < timeout, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def polls_after(auth: Any, n: int = 2, timeout: float = 10.0) -> None:
    """Wait until the revocation poller has completed `n` more polls (so one began after the caller's change)."""
    poller = auth.poller
    assert poller is not None, "the revocation poller is not running"
    target = poller.polls + n

    async def done() -> bool:
        return bool(poller.polls >= target)

    await wait_until(done, timeout, f"{n} revocation polls")
