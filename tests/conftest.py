"""Suite-wide fixtures: a loopback-only network guard and an isolated data folder."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".numba_cache"))

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


class NetworkAccessError(RuntimeError):
    """A test tried to reach a host other than loopback."""


def _is_loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _check(address: Any) -> None:
    if isinstance(address, tuple) and not _is_loopback(address[0]):
        raise NetworkAccessError(f"Tests may only connect to 127.0.0.1; blocked connect to {address!r}")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _check(address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _check(address)
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if not _is_loopback(host):
        raise NetworkAccessError(f"Tests may only resolve loopback; blocked lookup of {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


# Installed at import time so that even module-level code in tests cannot reach the internet.
socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
socket.getaddrinfo = _guarded_getaddrinfo


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the data and strategy folders at a temp dir and reset cached settings."""
    from cracktrader.settings import get_settings

    data_dir = tmp_path / "data"
    monkeypatch.setenv("CRACKTRADER_DATA_DIR", str(data_dir))
    # A sweep's chunk cache would otherwise carry rows from one test (or run) into the next.
    monkeypatch.setenv("CRACKTRADER_SWEEP_CACHE_DIR", str(tmp_path / "sweep-cache"))
    monkeypatch.delenv("CRACKTRADER_STRATEGY_DIR", raising=False)
    monkeypatch.delenv("CRACKTRADER_EXCHANGE_OPTIONS", raising=False)
    # Tests pick their database themselves; an ambient one must never be written to.
    for name in ("DATABASE_URL", "CRACKTRADER_DATABASE_URL", "CORS_ORIGINS", "CRACKTRADER_API_HOST"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield data_dir
    get_settings.cache_clear()


# How long a test's leftover backtest jobs may take to wind down after it (stopped runs end within a second or two).
POOL_DRAIN_S = 20.0


@pytest.fixture
def pools_left_idle() -> Iterator[None]:
    """After the test, wait until the backtest pools this process shares between apps have no job left.

    The pool is per process (an app per test would spawn its workers each time), so work a test leaves behind
    (a run stopped while its worker was inside a slow exchange call) would hold slots in the next ones. A pool
    still busy after POOL_DRAIN_S is closed (its workers end) and the next test gets a fresh one, with a warning
    naming the runs that held it. For tests whose apps are gone when they end (a module-scoped server's runs
    would be cut short).
    """
    yield
    import sys
    import time
    import warnings

    pool_module = sys.modules.get("cracktrader.runs.pool")
    if pool_module is None:
        return
    deadline = time.monotonic() + POOL_DRAIN_S
    for pool in list(pool_module._pools.values()):
        while not pool.closed and (pool.running or pool.waiting) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not pool.closed and (pool.running or pool.waiting):
            with pool._lock:
                held = sorted(pool._running)
            warnings.warn(f"a backtest pool was still busy {POOL_DRAIN_S:.0f} s after the test (runs {held}); "
                          "closed it", stacklevel=1)  # fmt: skip
            pool.close()


@pytest.fixture
def fake_binance(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fake Binance on 127.0.0.1 with `binance` pointed at it through CRACKTRADER_EXCHANGE_OPTIONS."""
    from cracktrader.settings import get_settings
    from fakes.binance import FakeBinance

    with FakeBinance() as server:
        monkeypatch.setenv("CRACKTRADER_EXCHANGE_OPTIONS", server.exchange_options_json())
        monkeypatch.setenv("CRACKTRADER_CCXT_BACKOFF_BASE", "0")
        get_settings.cache_clear()
        yield server


@pytest.fixture(params=("sqlite", "postgresql"))
def db_settings(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Settings on a fresh SQLite file, or on a throwaway PostgreSQL database created for the test."""
    from db_support import app_database

    with app_database(request.param, monkeypatch) as settings:
        yield settings


@pytest.fixture
def pg(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Settings on a throwaway PostgreSQL database created for the test."""
    from db_support import app_database

    with app_database("postgresql", monkeypatch) as settings:
        yield settings


@pytest.fixture(params=("sqlite", "postgresql"))
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """An empty database of each backend, migrated to head (a test module may define its own, unmigrated)."""
    from cracktrader.db.migrate import upgrade
    from db_support import database_target

    with database_target(request.param, tmp_path) as target:
        upgrade(target.url, connect_args=target.connect_args)
        yield target
