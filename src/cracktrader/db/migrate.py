"""Alembic migrations from code: upgrade, downgrade and read the current revision, from sync or async callers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from cracktrader.db.engine import make_engine

__all__ = ["MIGRATIONS_DIR", "alembic_config", "current", "downgrade", "head", "upgrade"]

# Shipped inside the package so an installed cracktrader can migrate its database without the repository.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

T = TypeVar("T")

# Alembic keeps the running migration context in module globals, so two commands in one process must not overlap.
# (Other processes are serialised by a PostgreSQL advisory lock in env.py.)
_ALEMBIC_LOCK = threading.Lock()


def alembic_config() -> Config:
    """An Alembic config for the package's migrations (no ini file, so no logging setup)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _run_coroutine(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    # Called from async code (e.g. a web app's lifespan): asyncio.run cannot nest, so give the migration its own
    # loop in a worker thread. This blocks the caller's loop; use `await asyncio.to_thread(upgrade, url)` to avoid it.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="alembic") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _with_connection(url: str, work: Callable[[Connection], T], connect_args: dict[str, Any] | None) -> T:
    """Run `work` on a sync view of an async connection to the URL, then commit."""

    async def main() -> T:
        engine = make_engine(url, connect_args=connect_args)
        try:
            async with engine.connect() as connection:
                result = await connection.run_sync(work)
                await connection.commit()
                return result
        finally:
            await engine.dispose()

    return _run_coroutine(main)


def _command(url: str, connect_args: dict[str, Any] | None, action: Callable[[Config], None]) -> None:
    def work(connection: Connection) -> None:
        config = alembic_config()
        # env.py migrates this connection instead of opening its own.
        config.attributes["connection"] = connection
        action(config)

    # The lock spans connect to commit: a second thread whose SQLite read snapshot began before the first one
    # committed would fail to write at once with "database is locked" (WAL's stale-snapshot rule ignores
    # busy_timeout); seen once in a full suite run beside two CPU-heavy tests.
    with _ALEMBIC_LOCK:
        _with_connection(url, work, connect_args)


def upgrade(url: str, revision: str = "head", *, connect_args: dict[str, Any] | None = None) -> None:
    """Migrate the database at `url` up to `revision` (creating the SQLite file and folder if needed)."""
    _command(url, connect_args, lambda config: command.upgrade(config, revision))


def downgrade(url: str, revision: str, *, connect_args: dict[str, Any] | None = None) -> None:
    """Migrate the database at `url` down to `revision` ("base" drops every table)."""
    _command(url, connect_args, lambda config: command.downgrade(config, revision))


def current(url: str, *, connect_args: dict[str, Any] | None = None) -> str | None:
    """The database's revision, or None when it has never been migrated."""
    return _with_connection(url, lambda c: MigrationContext.configure(c).get_current_revision(), connect_args)


def head() -> str | None:
    """The newest revision shipped with this version of cracktrader."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
