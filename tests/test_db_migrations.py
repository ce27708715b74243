"""Alembic migrations, the database settings and engine setup, on real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from cracktrader.db.engine import make_engine
from cracktrader.db.migrate import MIGRATIONS_DIR, current, downgrade, head, upgrade
from cracktrader.db.models import Base
from cracktrader.settings import Settings, get_settings, normalize_database_url
from db_support import BACKENDS, DatabaseTarget, database_target, postgres_schema, table_names

REPO = Path(__file__).resolve().parent.parent
SWEEP_TABLES = {"sweeps", "sweep_rows"}  # 0013
WALKFORWARD_TABLES = {"walkforwards"}  # 0015
EVENT_TABLES = {"run_events"}  # 0016
SLOT_TABLES = {"runner_slots"}  # 0019
OUR_TABLES = (
    SWEEP_TABLES
    | WALKFORWARD_TABLES
    | EVENT_TABLES
    | SLOT_TABLES
    | {
        "runs",
        "run_symbols",
        "run_results",
        "run_series",
        "servers",
        "users",
        "api_keys",
        "refresh_tokens",
        "strategies",
        "session_state",
        "session_candles",
        "session_equity",
        "session_orders",
        "session_fills",
        "session_positions",
        "session_balances",
        "live_orders",
        "live_fills",
        "exchange_credentials",
        "alerts",
        "idempotency_keys",
        "auth_rate_limits",
        "auth_login_failures",
    }
)


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseTarget]:
    """An empty database of each backend."""
    with database_target(request.param, tmp_path) as target:
        yield target


def tables(target: DatabaseTarget) -> set[str]:
    """Tables in the target right now."""
    return asyncio.run(table_names(target))


def schema_diff(target: DatabaseTarget) -> list[Any]:
    """What `alembic revision --autogenerate` would emit against the models (empty when in sync)."""

    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async def main() -> list[Any]:
        engine = target.engine()
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(compare)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def test_upgrade_downgrade_and_upgrade_again(target: DatabaseTarget) -> None:
    assert current(target.url, connect_args=target.connect_args) is None

    upgrade(target.url, connect_args=target.connect_args)
    assert current(target.url, connect_args=target.connect_args) == head()
    assert tables(target) == OUR_TABLES | {"alembic_version"}

    downgrade(target.url, "base", connect_args=target.connect_args)
    assert current(target.url, connect_args=target.connect_args) is None
    assert tables(target) == {"alembic_version"}

    upgrade(target.url, connect_args=target.connect_args)
    assert current(target.url, connect_args=target.connect_args) == head()
    assert tables(target) == OUR_TABLES | {"alembic_version"}


# Each revision a downgrade may stop at, and the tables the revisions after it add.
SHARED_LIMITS = {"auth_rate_limits", "auth_login_failures"}  # 0014
LATER = SWEEP_TABLES | SHARED_LIMITS | WALKFORWARD_TABLES | EVENT_TABLES | SLOT_TABLES  # 0013 to 0019
DOWNGRADES = [
    ("0007", {"live_orders", "live_fills", "exchange_credentials", "alerts", "idempotency_keys", *LATER}),
    ("0009", {"exchange_credentials", "alerts", "idempotency_keys", *LATER}),
    ("0010", {"alerts", "idempotency_keys", *LATER}),
    ("0011", {"idempotency_keys", *LATER}),
    ("0012", LATER),
    ("0013", SHARED_LIMITS | WALKFORWARD_TABLES | EVENT_TABLES | SLOT_TABLES),
    ("0014", WALKFORWARD_TABLES | EVENT_TABLES | SLOT_TABLES),
    ("0015", EVENT_TABLES | SLOT_TABLES),
    ("0016", SLOT_TABLES),  # 0017 adds the queue's columns to runs, no table
    ("0017", SLOT_TABLES),  # 0018 adds runs.job_spec
    ("0018", SLOT_TABLES),
]


@pytest.mark.parametrize(("revision", "later"), DOWNGRADES, ids=[r for r, _ in DOWNGRADES])
def test_downgrading_drops_only_the_later_tables_and_upgrading_restores_the_schema(
    target: DatabaseTarget, revision: str, later: set[str]
) -> None:
    upgrade(target.url, connect_args=target.connect_args)

    downgrade(target.url, revision, connect_args=target.connect_args)
    assert current(target.url, connect_args=target.connect_args) == revision
    assert tables(target) == OUR_TABLES - later | {"alembic_version"}

    upgrade(target.url, connect_args=target.connect_args)
    assert tables(target) == OUR_TABLES | {"alembic_version"}
    assert schema_diff(target) == []


def test_migrated_schema_matches_the_models(target: DatabaseTarget) -> None:
    upgrade(target.url, connect_args=target.connect_args)
    assert schema_diff(target) == []


def test_upgrading_an_up_to_date_database_changes_nothing(target: DatabaseTarget) -> None:
    upgrade(target.url, connect_args=target.connect_args)
    upgrade(target.url, connect_args=target.connect_args)
    assert current(target.url, connect_args=target.connect_args) == head()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_upgrade_can_be_called_from_a_running_event_loop(anyio_backend: str, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{(tmp_path / 'nested' / 'app.db').as_posix()}"
    # As a web app's lifespan would: plainly, and without blocking the loop.
    upgrade(url)
    await asyncio.to_thread(upgrade, url)
    assert current(url) == head()


def test_alembic_cli_migrates_the_database_named_by_DATABASE_URL(tmp_path: Path) -> None:
    db = tmp_path / "cli" / "cracktrader.db"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db.as_posix()}"}
    env.pop("CRACKTRADER_DATABASE_URL", None)
    alembic = [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini")]

    for args in (["upgrade", "head"], ["check"], ["downgrade", "base"], ["upgrade", "head"]):
        result = subprocess.run([*alembic, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr

    assert current(f"sqlite:///{db.as_posix()}") == head()


def test_migrations_ship_inside_the_package() -> None:
    assert MIGRATIONS_DIR.parent == Path(upgrade.__code__.co_filename).parent
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert any((MIGRATIONS_DIR / "versions").glob("*.py"))
    assert head() is not None


def test_database_url_defaults_to_sqlite_in_the_data_dir(monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("CRACKTRADER_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    assert get_settings().database_url == f"sqlite+aiosqlite:///{isolated_env.as_posix()}/cracktrader.db"
    assert get_settings().sqlalchemy_echo is False


def test_database_url_comes_from_DATABASE_URL_or_the_prefixed_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRACKTRADER_DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db.internal:5432/app")
    monkeypatch.setenv("SQLALCHEMY_ECHO", "true")
    assert Settings().database_url == "postgresql+asyncpg://u:p@db.internal:5432/app"
    assert Settings().sqlalchemy_echo is True

    monkeypatch.setenv("CRACKTRADER_DATABASE_URL", "sqlite:///./other.db")
    assert Settings().database_url == "sqlite+aiosqlite:///./other.db"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://h/db", "postgresql+asyncpg://h/db"),
        ("postgresql://u@h:5432/db", "postgresql+asyncpg://u@h:5432/db"),
        ("postgresql+asyncpg://h/db", "postgresql+asyncpg://h/db"),
        ("sqlite:///rel.db", "sqlite+aiosqlite:///rel.db"),
        ("sqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("  sqlite://  ", "sqlite+aiosqlite://"),
    ],
)
def test_driverless_urls_get_the_async_driver(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected


def test_sqlite_engine_creates_its_folder_and_enables_wal_foreign_keys_and_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "x.db"

    async def pragmas() -> tuple[Any, ...]:
        engine = make_engine(f"sqlite:///{path.as_posix()}")
        try:
            async with engine.connect() as conn:
                return tuple(
                    [
                        (await conn.execute(text(f"PRAGMA {name}"))).scalar_one()
                        for name in ("journal_mode", "foreign_keys", "busy_timeout")
                    ]
                )
        finally:
            await engine.dispose()

    assert asyncio.run(pragmas()) == ("wal", 1, 10_000)
    assert path.is_file()


def test_upgrades_from_several_threads_at_once_all_succeed(target: DatabaseTarget) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(upgrade, target.url, connect_args=target.connect_args) for _ in range(4)]
        for future in futures:
            future.result()
    assert current(target.url, connect_args=target.connect_args) == head()


def test_workers_upgrading_postgresql_at_once_all_succeed() -> None:
    # Web workers are separate processes that each migrate at start-up; the advisory lock serialises them.
    script = (
        "import json, sys; from cracktrader.db.migrate import upgrade; "
        "upgrade(sys.argv[1], connect_args=json.loads(sys.argv[2]))"
    )
    with postgres_schema() as target:
        args = [sys.executable, "-c", script, target.url, json.dumps(target.connect_args)]
        workers = [subprocess.Popen(args, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        for worker in workers:
            _, stderr = worker.communicate(timeout=120)
            assert worker.returncode == 0, stderr
        assert current(target.url, connect_args=target.connect_args) == head()
        assert schema_diff(target) == []
