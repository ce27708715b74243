"""Async engines and sessions for SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from cracktrader.settings import normalize_database_url

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "is_sqlite", "make_engine", "make_sessionmaker", "sqlite_path"]

# How long a SQLite writer waits for another writer's lock before failing with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 10_000


def sqlite_path(url: str | URL) -> Path | None:
    """The database file of a SQLite URL, or None for other databases and in-memory SQLite."""
    parsed = make_url(normalize_database_url(url) if isinstance(url, str) else url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def is_sqlite(url: str | URL) -> bool:
    """Whether the URL points at SQLite."""
    parsed = make_url(normalize_database_url(url) if isinstance(url, str) else url)
    return parsed.get_backend_name() == "sqlite"


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets readers (the API listing runs) proceed while a run writes its results.
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable across application crashes in WAL mode and avoids an fsync per commit.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # SQLite ignores foreign keys (and ON DELETE CASCADE) unless asked, per connection.
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


# SQLAlchemy's default overflow beyond the pool's 5 kept connections.
_MAX_OVERFLOW = 10


def make_engine(
    url: str, *, echo: bool = False, connect_args: dict[str, Any] | None = None, held_connections: int = 0
) -> AsyncEngine:
    """An async engine for the URL (driverless URLs get the async driver); SQLite gets WAL, a busy timeout and FKs.

    `held_connections`: how many connections may be kept out of the pool for good (a live session's order line),
    on top of the pool's usual overflow, so they never starve the requests.
    """
    url = normalize_database_url(url)
    kwargs: dict[str, Any] = {"echo": echo, "connect_args": dict(connect_args or {})}
    if is_sqlite(url):
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            kwargs["max_overflow"] = _MAX_OVERFLOW + held_connections
    else:
        kwargs["max_overflow"] = _MAX_OVERFLOW + held_connections
        # Server connections die behind the app's back (restarts, idle timeouts); check before handing one out.
        kwargs["pool_pre_ping"] = True
    engine = create_async_engine(url, **kwargs)
    if is_sqlite(url):
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions bound to the engine; objects stay readable after commit (no implicit refresh in async code)."""
    return async_sessionmaker(engine, expire_on_commit=False)
