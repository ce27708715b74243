"""A session's recent candles: from the simulator that holds them in memory, or as stored when another process
runs it."""

from __future__ import annotations

from typing import Any

import numpy as np

from cracktrader.data.candles import Candles
from cracktrader.runs.errors import RunNotFoundError
from cracktrader.runs.sessions import LiveRun
from cracktrader.web.analysis.service import candle_columns, run_symbol
from cracktrader.web.runs.service import status_anywhere


def recent_candles(run: LiveRun, symbol: str | None, limit: int) -> dict[str, Any]:
    """The last `limit` candles of one of the session's symbols (404 SYMBOL_NOT_IN_RUN for another)."""
    session = run.plan.session
    symbols = list(session.symbols)
    chosen = run_symbol({"run_id": run.run_id, "symbols": symbols}, symbol)
    data = session.sim.data
    n = data.n_bars
    a = max(0, n - limit)
    j = symbols.index(chosen)
    # Copies: the session appends to its arrays while the answer is encoded.
    candles = Candles(
        data.timestamp[a:n].copy(),
        *(getattr(data, k)[a:n, j].copy() for k in ("open", "high", "low", "close", "volume")),
    )
    return {
        "run_id": run.run_id,
        "symbol": chosen,
        "symbols": symbols,
        "timeframe": run.plan.timeframe.name,
        "status": run.status,
        "bars": n,
        "truncated": a > 0,
        "candles": candle_columns(candles),
    }


async def recent_candles_anywhere(
    app: Any, registry: Any, run_id: str, symbol: str | None, limit: int, *, owner: int | None
) -> dict[str, Any]:
    """The recent candles of a session this process runs, else those its process stored (404 for no session)."""
    sessions = app.state.sessions
    try:
        return recent_candles(sessions.get(run_id, owner=owner), symbol, limit)
    except RunNotFoundError:
        stored = await app.state.run_store.get(run_id, user_id=owner)
        if stored is None or stored.mode not in ("paper", "live") or sessions.rows is None:
            raise
    symbols = list(stored.symbols)
    chosen = run_symbol({"run_id": run_id, "symbols": symbols}, symbol)
    rows, total = await sessions.rows.recent_candles(run_id, symbols.index(chosen), limit)
    status = await status_anywhere(app, registry, run_id, owner=owner)
    columns = np.array(rows, dtype=np.float64).reshape(-1, 6)
    candles = Candles(columns[:, 0].astype(np.int64), *(columns[:, k].copy() for k in range(1, 6)))
    return {
        "run_id": run_id,
        "symbol": chosen,
        "symbols": symbols,
        "timeframe": stored.timeframe,
        "status": status["status"],
        "bars": total,
        "truncated": total > len(rows),
        "candles": candle_columns(candles),
    }
