"""Sweeps from the command line: a row of a sweep stored in the database the server uses, as a backtest request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cracktrader.runs.config import BacktestConfig
from cracktrader.runs.local import with_store
from cracktrader.settings import Settings, get_settings

if TYPE_CHECKING:
    from cracktrader.db.run_store import RunStore

__all__ = ["row_config"]


def row_config(sweep_id: str, rank: int, *, settings: Settings | None = None) -> BacktestConfig:
    """The backtest of a stored sweep's row of `rank` by its sort (NOT_FOUND when there is no such sweep or row)."""
    from cracktrader.db.sweep_store import SweepStore
    from cracktrader.sweeps.runner import stored_row

    async def work(store: RunStore) -> BacktestConfig:
        request, row = await stored_row(SweepStore(store.engine), sweep_id, rank)
        return request.backtest_config(row.params)

    return with_store(settings or get_settings(), work)
