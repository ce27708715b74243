"""Per-symbol figures of a run's round trips and its return per calendar month, from its equity curve."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cracktrader.runs.results import RunResults


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def by_symbol(trips: np.ndarray, symbols: tuple[str, ...], initial_cash: float) -> list[dict[str, Any]]:
    """Trades, pnl, fees, return on the initial cash and win rate of each of the run's symbols."""
    out = []
    for j, symbol in enumerate(symbols):
        mine = trips[trips["symbol"] == j]
        n = int(mine.shape[0])
        pnl = float(np.nansum(mine["pnl"])) if n else 0.0
        wins = int(np.count_nonzero(mine["pnl"] > 0))
        out.append(
            {
                "symbol": symbol,
                "trades": n,
                "wins": wins,
                "losses": int(np.count_nonzero(mine["pnl"] < 0)),
                "win_rate": wins / n if n else None,
                "pnl": pnl,
                "fees": float(mine["fees"].sum()) if n else 0.0,
                "return_pct": _finite(pnl / initial_cash * 100.0) if initial_cash > 0 else None,
            }
        )
    return out


def monthly(results: RunResults) -> list[dict[str, Any]]:
    """Return of each calendar month (UTC): its last value against the previous month's (the first: initial cash)."""
    equity = results.equity
    if equity.shape[0] == 0:
        return []
    months = equity["ts"].astype("datetime64[ms]").astype("datetime64[M]")
    # The last point of each month; equity is in time order.
    last = np.r_[np.flatnonzero(months[1:] != months[:-1]), equity.shape[0] - 1]
    ends = equity["value"][last]
    initial = float(results.head.get("initial_cash") or 0.0)
    first_base = initial if initial > 0 else float(equity["value"][0])
    bases = np.r_[first_base, ends[:-1]]
    out = []
    for month, base, end in zip(months[last].astype(str).tolist(), bases.tolist(), ends.tolist(), strict=True):
        ret = (end / base - 1.0) * 100.0 if base else math.nan
        out.append({"month": month, "start_value": base, "end_value": end, "return_pct": _finite(ret)})
    return out
