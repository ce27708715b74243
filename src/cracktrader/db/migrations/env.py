"""Alembic environment: migrates the URL (or connection) migrate.py hands over, else the app's configured database."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

from cracktrader.db.engine import make_engine
from cracktrader.db.models import Base, UTCDateTime
from cracktrader.settings import get_settings, normalize_database_url

# pg_advisory_xact_lock key (any constant bigint; zlib.crc32(b"cracktrader.migrations")).
MIGRATION_LOCK_KEY = 612_929_968

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None:
    # Keep the application's loggers alive when the CLI configures logging from alembic.ini.
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    """`-x url=...`, else sqlalchemy.url from the ini file, else the app's DATABASE_URL / default SQLite file."""
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    return normalize_database_url(url or get_settings().database_url)


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # Migrations must not import application types (they change; migrations are frozen in time).
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds the table there and is plain ALTER elsewhere.
        render_as_batch=True,
        render_item=_render_item,
        **kwargs,
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout (`alembic upgrade head --sql`) without connecting."""
    _configure(url=_database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    """Run the migrations on an open connection."""
    if connection.dialect.name == "sqlite":
        # Batch mode rebuilds tables by DROP + RENAME; with foreign keys on, dropping `runs` would cascade-delete
        # every run's results. The pragma only takes effect outside a transaction, hence the commit.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    elif connection.dialect.name == "postgresql":
        # Several app workers start together and each migrates: the first takes the lock and migrates, the
        # others wait and then find nothing to do. Held until the caller commits (Alembic then joins this
        # transaction instead of opening its own).
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()


async def run_async_migrations(url: str) -> None:
    """Open an engine for the URL and migrate it."""
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    """Migrate the connection migrate.py passed in, or the configured database (the `alembic` CLI)."""
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
        return
    asyncio.run(run_async_migrations(_database_url()))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
