"""Database targets for tests: a SQLite file in tmp_path or a throwaway schema in the real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from cracktrader.db.engine import make_engine
from cracktrader.db.models import Base
from cracktrader.db.run_store import RunStore
from cracktrader.settings import Settings, get_settings

# CI starts PostgreSQL with trust auth; override for other setups.
POSTGRES_URL = os.environ.get("CRACKTRADER_TEST_POSTGRES_URL", "postgresql+asyncpg://root@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class DatabaseTarget:
    """Where a test's tables live: a URL plus connect_args (the PostgreSQL schema goes in search_path)."""

    backend: str
    url: str
    connect_args: dict[str, Any] = field(default_factory=dict)

    def engine(self) -> Any:
        """A new async engine for the target (the caller disposes it)."""
        return make_engine(self.url, connect_args=self.connect_args)

    def store(self) -> RunStore:
        """A RunStore on a new engine (dispose with `await store.engine.dispose()`)."""
        return RunStore(self.engine())


async def _admin(sql: str) -> None:
    engine = make_engine(POSTGRES_URL)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


@contextmanager
def postgres_schema() -> Iterator[DatabaseTarget]:
    """A uniquely named schema in the test database, dropped afterwards; fails (never skips) if PostgreSQL is down."""
    schema = f"ct_test_{uuid.uuid4().hex[:16]}"
    try:
        asyncio.run(_admin(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_URL} ({type(exc).__name__}: {exc}). The database tests need "
            "it: start PostgreSQL (CI does) or set CRACKTRADER_TEST_POSTGRES_URL.",
            pytrace=False,
        )
    try:
        # Only this schema is on the search path, so unqualified names (and Alembic's reflection) never see the
        # tables other people keep in `public`.
        yield DatabaseTarget("postgresql", POSTGRES_URL, {"server_settings": {"search_path": schema}})
    finally:
        asyncio.run(_admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@contextmanager
def database_target(backend: str, tmp_path: Path) -> Iterator[DatabaseTarget]:
    """An empty database of the given backend."""
    if backend == "sqlite":
        yield DatabaseTarget("sqlite", f"sqlite+aiosqlite:///{(tmp_path / 'db' / 'runs.db').as_posix()}")
    elif backend == "postgresql":
        with postgres_schema() as target:
            yield target
    else:
        raise ValueError(backend)


async def table_names(target: DatabaseTarget) -> set[str]:
    """Tables that exist in the target (its schema only, on PostgreSQL)."""
    from sqlalchemy import inspect

    engine = target.engine()
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def row_count(target: DatabaseTarget, table: str) -> int:
    """Rows in one of our tables."""
    assert table in Base.metadata.tables, table
    engine = target.engine()
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one())
    finally:
        await engine.dispose()


async def _pg_admin(sql: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE need that) on the test database."""
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_URL.replace("+asyncpg", ""))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def app_database(backend: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings whose DATABASE_URL is the isolated SQLite file, or a throwaway PostgreSQL database."""
    if backend == "sqlite":
        yield get_settings()
        return
    name = f"ct_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required (CI starts it): {exc}", pytrace=False)
    monkeypatch.setenv("DATABASE_URL", POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}")
    get_settings.cache_clear()
    try:
        yield get_settings()
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
