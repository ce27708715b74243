"""Run history from the command line: the same database the server uses (settings.database_url), migrated first."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from cracktrader.runs.config import BacktestConfig, record_fields
from cracktrader.runs.rerun import RunOutcome, StoredRun, compare_runs, load_stored_run, rerun_config
from cracktrader.runs.results import RunResults
from cracktrader.runs.sanitize import redact
from cracktrader.settings import Settings, get_settings

if TYPE_CHECKING:
    from cracktrader.db.run_store import RunStore

__all__ = ["load_run", "rerun_locally", "save_run", "with_store"]

T = TypeVar("T")


def with_store(settings: Settings, work: Callable[[RunStore], Awaitable[T]]) -> T:
    """Migrate the configured database, then run `work(store)` on it (needs the web extra's database drivers)."""
    from cracktrader.db.engine import make_engine
    from cracktrader.db.migrate import upgrade
    from cracktrader.db.run_store import RunStore

    url = settings.database_url
    upgrade(url)

    async def main() -> T:
        engine = make_engine(url)
        try:
            return await work(RunStore(engine))
        finally:
            await engine.dispose()

    return asyncio.run(main())


def save_run(
    results: RunResults, config: BacktestConfig, *, settings: Settings | None = None, rerun_of: str | None = None
) -> str:
    """Store a finished CLI run (its record and results) in the history; returns its id."""
    settings = settings or get_settings()
    run_id = results.run_id
    assert run_id is not None
    status = str(results.head.get("status") or "completed")

    async def work(store: RunStore) -> str:
        await store.create(
            run_id=run_id,
            mode="backtest",
            status="running",
            config=redact(config.model_dump()),
            **record_fields(config),
            rerun_of=rerun_of,
        )
        await store.save_results(run_id, results=results, status=status, ended_at=datetime.now(UTC))
        return run_id

    return with_store(settings, work)


def load_run(run_id: str, *, settings: Settings | None = None) -> StoredRun:
    """A stored run; RunNotFoundError when the history has none with that id."""
    return with_store(settings or get_settings(), lambda store: load_stored_run(store, run_id))


def rerun_locally(
    original: StoredRun, run: Callable[[BacktestConfig], RunResults]
) -> tuple[BacktestConfig, RunResults]:
    """Run `original` again with `run` and put the comparison in the results' `rerun`."""
    config = rerun_config(original)
    results = run(config)
    head_config = results.head.get("config") or {}
    comparison = compare_runs(original, head_config.get("inputs") or {}, RunOutcome.of(results))
    results.head["rerun"] = comparison.model_dump(mode="json")
    return config, results
