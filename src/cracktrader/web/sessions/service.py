"""A session's recent candles, from the simulator that holds them in memory."""

from __future__ import annotations

from typing import Any

from cracktrader.data.candles import Candles
from cracktrader.runs.sessions import LiveRun
from cracktrader.web.analysis.service import candle_columns, run_symbol


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
