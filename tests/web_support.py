"""Helpers for web tests: an in-process client with lifespan, a real uvicorn server, and polling."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
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
# Test strategies (tests/strategies/slow.py's SlowStrategy); app_client and LiveServer load them.
TEST_STRATEGY_DIR = Path(__file__).resolve().parent / "strategies"
# YEAR_1H's 8,784 bars at 5 ms or more each: at least 44 s by construction on any machine, so a test sees it
# running, with progress every 50 ms (throttled to the status period) and a trade every 10 bars, until it stops it.
SLOW_RUN = {**YEAR_1H, "strategy_name": "SlowStrategy", "strategy_params": {"bar_ms": 5, "trade_every": 10}}
# SLOW_RUN spinning on the CPU instead of sleeping: a run as CPU-heavy as a real one, for as long.
BUSY_RUN = {**SLOW_RUN, "strategy_params": {"bar_ms": 5, "trade_every": 10, "busy": True}}
# 788,400 one-minute bars: the first 600,000 at full speed (a heavy run that fills thousands of orders), then
# 5 ms or more a bar (over 15 minutes), so a test can act deep into a run before it can possibly end.
DEEP_RUN = {
    **YEAR_1H,
    "strategy_name": "SlowStrategy",
    "strategy_params": {"bar_ms": 5, "fast_bars": 600_000, "trade_every": 50},
    "timeframe": "1m",
    "start_date": "2021-01-01",
    "end_date": "2022-07-01",
}
DEEP_BARS = 600_000


def released_run(run: dict[str, Any], release_file: Path) -> dict[str, Any]:
    """`run` whose slow bars end (run at full speed) as soon as the test creates `release_file`."""
    return {**run, "strategy_params": {**run["strategy_params"], "release_file": str(release_file)}}


def with_test_strategies(settings: Settings) -> Settings:
    """`settings` loading the test strategies, unless a test chose its own strategy folder."""
    if settings.strategy_dir is not None:
        return settings
    return settings.model_copy(update={"strategy_dir": TEST_STRATEGY_DIR})


def web_settings(**overrides: Any) -> WebSettings:
    """Web settings for tests: fast status throttling unless overridden."""
    return WebSettings(**overrides)


@contextlib.asynccontextmanager
async def app_client(settings: Settings | None = None, **web: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client bound to an in-process app whose lifespan (database, run manager) is running."""
    app = create_app(with_test_strategies(settings or get_settings()), web_settings(**web))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


async def wait_for_status(client: httpx.AsyncClient, statuses: set[str], timeout: float = 120.0) -> dict[str, Any]:
    """Poll `/status` until the run reaches one of `statuses` (the timeout is a safety net, not a speed bound)."""
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
        self.app = create_app(with_test_strategies(settings or get_settings()), web_settings(api_port=self.port, **web))
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


class ServerProcess:
    """A real server process (`python -m cracktrader.web.server.main`) on a free 127.0.0.1 port: it can be killed.

    `env` is added to this process's environment (the suite's data folder included); stderr goes to `log`.
    """

    def __init__(self, env: dict[str, str], log: Path, args: tuple[str, ...] = ()) -> None:
        self.port = free_loopback_port()
        self.env = {**os.environ, **env}
        self.log = log
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> ServerProcess:
        """Start it and wait until `/api/v1/health` answers (the timeout is a safety net for a loaded machine)."""
        command = [sys.executable, "-m", "cracktrader.web.server.main", "--port", str(self.port), "--log-level", "info"]
        command += self.args
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(command, env=self.env, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/api/v1/health", timeout=2).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last write."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL if it has not ended in 20 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
