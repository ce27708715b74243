"""Helpers for web tests: an in-process client with lifespan, a real uvicorn server, and polling."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import uvicorn

from cracktrader.settings import Settings, get_settings
from cracktrader.web.app import create_app
from cracktrader.web.config import WebSettings
from support import free_loopback_port

YEAR_1H = {
    "strategy_name": "TestStrategy",
    "symbols": ["BTC/USDT"],
    "timeframe": "1h",
    "start_date": "2024-01-01T00:00:00Z",
    "end_date": "2025-01-01T00:00:00Z",
    "initial_cash": 10000.0,
    "exchange": "synthetic",
}
# Event-driven over ~1.6M one-minute bars: long enough (seconds) to observe progress and stop it.
SLOW_RUN = {
    **YEAR_1H,
    "strategy_name": "SmaCrossEvents",
    "timeframe": "1m",
    "start_date": "2021-01-01",
    "end_date": "2024-01-01",
}


def web_settings(**overrides: Any) -> WebSettings:
    """Web settings for tests: fast status throttling unless overridden."""
    return WebSettings(**overrides)


@contextlib.asynccontextmanager
async def app_client(settings: Settings | None = None, **web: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client bound to an in-process app whose lifespan (database, run manager) is running."""
    app = create_app(settings or get_settings(), web_settings(**web))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


async def wait_for_status(client: httpx.AsyncClient, statuses: set[str], timeout: float = 30.0) -> dict[str, Any]:
    """Poll `/status` until the run reaches one of `statuses`."""
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = (await client.get("/api/v1/status")).json()
        if status["status"] in statuses:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"run still {status['status']} after {timeout}s: {status}")
        await asyncio.sleep(0.02)


class LiveServer:
    """A real uvicorn serving the app on a free 127.0.0.1 port, in a background thread."""

    def __init__(self, settings: Settings | None = None, **web: Any) -> None:
        self.port = free_loopback_port()
        self.app = create_app(settings or get_settings(), web_settings(api_port=self.port, **web))
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", ws_ping_interval=None
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def live_server(**web: Any) -> Iterator[LiveServer]:
    """Start and stop a LiveServer."""
    server = LiveServer(**web)
    with server:
        yield server
