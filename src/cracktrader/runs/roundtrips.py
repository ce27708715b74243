"""Round-trip trades of a run's fills: entry and exit, size, pnl (the engine's, not recomputed) and fees.

A round trip is one closing fill with the part of the position it closed; its pnl and return are the ones the
engine booked on that fill (the same numbers `trades` and the metrics hold), its entry the position's average
entry price and the time the position was opened.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from cracktrader.engine.records import REASON_NAMES, REASON_STOP_LOSS, REASON_TAKE_PROFIT, STATUS_FILLED
from cracktrader.runs.results import RunResults, iso_times

# One round trip: times in UTC ms, side +1 long / -1 short, symbol indexes the run's symbols.
ROUNDTRIP_DTYPE = np.dtype(
    [
        ("symbol", "<i4"),
        ("side", "i1"),
        ("entry_ts", "<i8"),
        ("exit_ts", "<i8"),
        ("size", "<f8"),
        ("entry_price", "<f8"),
        ("exit_price", "<f8"),
        ("pnl", "<f8"),
        ("ret", "<f8"),
        ("fees", "<f8"),
        ("stop_loss", "<f8"),
        ("take_profit", "<f8"),
        ("reason", "i1"),
        ("exit_order_id", "<i8"),
    ]
)
# Columns a client may sort by, and the record field behind each.
SORT_FIELDS: dict[str, str] = {
    "entry_time": "entry_ts",
    "exit_time": "exit_ts",
    "symbol": "symbol",
    "size": "size",
    "entry_price": "entry_price",
    "exit_price": "exit_price",
    "pnl": "pnl",
    "pnl_pct": "ret",
    "duration": "duration",
    "fees": "fees",
}


def _bracket(params: Mapping[str, Any]) -> tuple[float, float]:
    """The stop-loss and take-profit fractions a run's parameters set (NaN when not set)."""

    def fraction(name: str) -> float:
        value = params.get(name)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan

    return fraction("stop_loss"), fraction("take_profit")


def run_params(head: Mapping[str, Any]) -> Mapping[str, Any]:
    """The parameters the run used: its effective ones when recorded, else the requested ones."""
    config = head.get("config") or {}
    inputs = config.get("inputs") if isinstance(config, Mapping) else None
    effective = inputs.get("effective_params") if isinstance(inputs, Mapping) else None
    if isinstance(effective, Mapping):
        return effective
    params = config.get("strategy_params") if isinstance(config, Mapping) else None
    return params if isinstance(params, Mapping) else {}


def round_trips(results: RunResults) -> np.ndarray:
    """Every closed round trip of the run, in the order the fills happened (ROUNDTRIP_DTYPE)."""
    orders = results.orders
    fills = orders[orders["status"] == STATUS_FILLED]
    # The metrics' order (engine.backtest.fill_summary): bar time, then symbol, then side.
    fills = fills[np.lexsort((fills["side"], fills["symbol"], fills["ts"]))]
    sl_frac, tp_frac = _bracket(run_params(results.head))
    out = np.empty(fills.shape[0], ROUNDTRIP_DTYPE)
    n = 0
    # Per symbol: signed position, average entry price, time opened, entry fees not yet charged to a round trip.
    state: dict[int, list[float]] = {}
    for row in fills.tolist():
        _id, _created, ts, sym, side, _type, _status, reason, size, price, trigger, fee, pnl, ret = row
        pos, avg, opened, entry_fee = state.get(sym, [0.0, 0.0, 0.0, 0.0])
        closing = pos != 0.0 and (pos > 0) != (side > 0)
        if closing:
            closed = min(size, abs(pos))
            share = closed / abs(pos)
            exit_fee = fee * (closed / size if size else 1.0)
            direction = 1 if pos > 0 else -1
            stop = trigger if reason == REASON_STOP_LOSS else avg * (1 - direction * sl_frac)
            take = trigger if reason == REASON_TAKE_PROFIT else avg * (1 + direction * tp_frac)
            out[n] = (sym, direction, int(opened), ts, closed, avg, price, pnl, ret, entry_fee * share + exit_fee,
                      stop, take, reason, _id)  # fmt: skip
            n += 1
            left = size - closed
            pos += closed * side
            entry_fee *= 1.0 - share
            if abs(pos) < 1e-12 * max(closed, 1.0):
                pos, entry_fee = 0.0, 0.0
            if left > 0 and pos == 0.0:  # a flip: the rest of the fill opens the other side
                pos, avg, opened, entry_fee = left * side, price, ts, fee - exit_fee
        else:
            if pos == 0.0:
                opened, avg = ts, price  # exactly the fill's price, not a rounded average of one
            else:
                avg = (avg * abs(pos) + price * size) / (abs(pos) + size)
            pos += size * side
            entry_fee += fee
        state[sym] = [pos, avg, opened, entry_fee]
    return out[:n]


def sort_round_trips(trips: np.ndarray, *, by: str, descending: bool) -> np.ndarray:
    """The round trips sorted by a `SORT_FIELDS` column (stable: ties keep fill order)."""
    if by == "duration":
        key: np.ndarray = trips["exit_ts"] - trips["entry_ts"]
    else:
        key = trips[SORT_FIELDS[by]]
    # Negated rather than reversed, so ties keep fill order both ways (NaN sorts last either way).
    order = np.argsort(-key.astype(np.float64) if descending else key, kind="stable")
    return trips[order]


def _floats(values: np.ndarray) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values.tolist()]


def round_trip_dicts(trips: np.ndarray, symbols: tuple[str, ...]) -> list[dict[str, Any]]:
    """Round trips as the API's dicts (times ISO 8601, pnl_pct in percent, duration in seconds)."""
    if trips.shape[0] == 0:
        return []
    entry, exit_ = iso_times(trips["entry_ts"]), iso_times(trips["exit_ts"])
    columns = zip(
        trips.tolist(),
        _floats(trips["stop_loss"]),
        _floats(trips["take_profit"]),
        _floats(trips["ret"] * 100.0),
        strict=True,
    )
    out = []
    for k, (row, stop, take, pct) in enumerate(columns):
        sym, side, entry_ts, exit_ts, size, entry_price, exit_price, pnl, _ret, fees, _sl, _tp, reason, oid = row
        out.append(
            {
                "symbol": symbols[sym] if 0 <= sym < len(symbols) else f"#{sym}",
                "side": "long" if side > 0 else "short",
                "entry_time": entry[k],
                "exit_time": exit_[k],
                "entry_price": entry_price,
                "exit_price": exit_price,
                "size": size,
                "pnl": pnl if math.isfinite(pnl) else None,
                "pnl_pct": pct,
                "duration_s": (exit_ts - entry_ts) / 1000.0,
                "fees": fees,
                "stop_loss": stop,
                "take_profit": take,
                "exit_reason": REASON_NAMES[reason] if 0 <= reason < len(REASON_NAMES) else "signal",
                "exit_order_id": oid,
            }
        )
    return out
