"""The results document: one shape for `backtest --json`, `GET /api/v1/results` and run history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cracktrader.engine.backtest import BacktestResult
from cracktrader.engine.records import (
    O_BAR,
    O_CREATED,
    O_FEE,
    O_ID,
    O_PNL,
    O_PRICE,
    O_QTY,
    O_REASON,
    O_RETURN,
    O_SIDE,
    O_STATUS,
    O_SYMBOL,
    O_TRIGGER,
    O_TYPE,
    REASON_NAMES,
    STATUS_FILLED,
    STATUS_NAMES,
    TYPE_NAMES,
)

RunStatus = Literal["idle", "starting", "running", "completed", "failed", "stopped"]


class TradeOut(BaseModel):
    """One fill."""

    id: int
    order_id: int
    timestamp: str
    symbol: str
    side: Literal["buy", "sell"]
    size: float
    price: float
    value: float
    commission: float
    pnl: float | None = Field(None, description="Realised pnl net of entry and exit fees; closing fills only")
    return_pct: float | None = Field(None, description="pnl / entry cost, as a fraction; closing fills only")
    reason: str


class OrderOut(BaseModel):
    """One order and what became of it."""

    id: int
    created_at: str
    timestamp: str | None = Field(None, description="When it filled, was rejected or canceled")
    symbol: str
    side: Literal["buy", "sell"]
    type: str
    status: str
    size: float | None
    price: float | None = Field(None, description="Fill price")
    trigger_price: float | None = Field(None, description="Limit or stop price")
    commission: float
    reason: str


class PositionOut(BaseModel):
    """A position still open at the end of the run."""

    symbol: str
    size: float
    entry_price: float
    market_price: float
    value: float
    unrealized_pnl: float


class EquityPoint(BaseModel):
    """Portfolio state at a bar's close."""

    timestamp: str
    value: float
    cash: float
    pnl: float


class ResultsDocument(BaseModel):
    """Full results of a run (seed 003's `GET /results`)."""

    model_config = ConfigDict(extra="allow")

    run_id: str | None
    config: dict[str, Any] | None
    status: RunStatus
    start_time: str | None
    end_time: str | None
    orders: list[OrderOut]
    trades: list[TradeOut]
    positions: list[PositionOut]
    equity_curve: list[EquityPoint]
    performance_metrics: dict[str, float | int | None]
    final_value: float | None
    error: str | None


def iso_times(ts_ms: np.ndarray) -> list[str]:
    """Vectorised ISO 8601 formatting of UTC milliseconds (`2024-01-01T00:00:00Z`)."""
    if ts_ms.size == 0:
        return []
    unit = "ms" if np.any(ts_ms % 1000) else "s"
    text = np.datetime_as_string(ts_ms.astype("datetime64[ms]"), unit=unit)  # type: ignore[call-overload]
    return [s + "Z" for s in text.tolist()]


def now_iso() -> str:
    """The current UTC time, ISO 8601 with a Z suffix."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _none_if_nan(x: float) -> float | None:
    return None if x != x else float(x)


def orders_and_trades(result: BacktestResult) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Order and fill rows of the document."""
    return order_rows_to_dicts(result.orders, result.symbols, result.timestamp)


def order_rows_to_dicts(
    rows: np.ndarray, symbols: tuple[str, ...], ts: np.ndarray, *, first_trade_id: int = 1
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Order records (see engine.records) as the document's order and trade dicts."""
    if rows.size == 0:
        return [], []
    created_iso = iso_times(ts[rows[:, O_CREATED].astype(np.int64)])
    bar_idx = rows[:, O_BAR].astype(np.int64)
    bar_iso = iso_times(ts[np.clip(bar_idx, 0, None)])
    orders: list[dict[str, Any]] = []
    trades: list[dict[str, Any]] = []
    for k, row in enumerate(rows.tolist()):
        status = int(row[O_STATUS])
        side = "buy" if row[O_SIDE] > 0 else "sell"
        symbol = symbols[int(row[O_SYMBOL])]
        reason = REASON_NAMES[int(row[O_REASON])]
        filled = status == STATUS_FILLED
        orders.append(
            {
                "id": int(row[O_ID]),
                "created_at": created_iso[k],
                "timestamp": bar_iso[k] if bar_idx[k] >= 0 else None,
                "symbol": symbol,
                "side": side,
                "type": TYPE_NAMES[int(row[O_TYPE])],
                "status": STATUS_NAMES[status],
                "size": _none_if_nan(row[O_QTY]),
                "price": _none_if_nan(row[O_PRICE]) if filled else None,
                "trigger_price": _none_if_nan(row[O_TRIGGER]),
                "commission": row[O_FEE],
                "reason": reason,
            }
        )
        if filled:
            trades.append(
                {
                    "id": first_trade_id + len(trades),
                    "order_id": int(row[O_ID]),
                    "timestamp": bar_iso[k],
                    "symbol": symbol,
                    "side": side,
                    "size": row[O_QTY],
                    "price": row[O_PRICE],
                    "value": row[O_QTY] * row[O_PRICE],
                    "commission": row[O_FEE],
                    "pnl": _none_if_nan(row[O_PNL]),
                    "return_pct": _none_if_nan(row[O_RETURN]),
                    "reason": reason,
                }
            )
    return orders, trades


def equity_curve(result: BacktestResult) -> list[dict[str, Any]]:
    """One point per bar: timestamp, value, cash and pnl against the initial cash."""
    initial = result.settings.initial_cash
    return [
        {"timestamp": t, "value": v, "cash": c, "pnl": v - initial}
        for t, v, c in zip(iso_times(result.timestamp), result.equity.tolist(), result.cash.tolist(), strict=True)
    ]


def positions(result: BacktestResult) -> list[dict[str, Any]]:
    """Open positions at the end of the run."""
    return [
        {
            "symbol": p.symbol,
            "size": p.size,
            "entry_price": p.entry_price,
            "market_price": p.market_price,
            "value": p.value,
            "unrealized_pnl": p.unrealized_pnl,
        }
        for p in result.positions
    ]


def build_document(
    result: BacktestResult,
    *,
    run_id: str,
    config: dict[str, Any],
    start_time: str,
    end_time: str,
    status: RunStatus | None = None,
) -> dict[str, Any]:
    """The results document of a finished (or stopped) backtest."""
    orders, trades = orders_and_trades(result)
    return {
        "run_id": run_id,
        "config": config,
        "status": status or ("completed" if result.completed else "stopped"),
        "start_time": start_time,
        "end_time": end_time,
        "orders": orders,
        "trades": trades,
        "positions": positions(result),
        "equity_curve": equity_curve(result),
        "performance_metrics": result.metrics,
        "final_value": result.final_value,
        "error": None,
    }


def empty_document(
    *,
    run_id: str | None,
    config: dict[str, Any] | None,
    status: str,
    start_time: str | None = None,
    end_time: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """The document of a run without results (failed before producing any, or never started)."""
    return {
        "run_id": run_id,
        "config": config,
        "status": status,
        "start_time": start_time,
        "end_time": end_time,
        "orders": [],
        "trades": [],
        "positions": [],
        "equity_curve": [],
        "performance_metrics": {},
        "final_value": None,
        "error": error,
    }
