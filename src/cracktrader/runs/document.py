"""The results document: one shape for `backtest --json`, `GET /api/v1/results` and run history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cracktrader.engine.records import STATUS_FILLED
from cracktrader.runs.rerun import RerunComparison
from cracktrader.runs.results import head_document, iso_times, make_head, order_dicts, order_records, trade_dicts

__all__ = [
    "EquityPoint",
    "OrderOut",
    "PositionOut",
    "ResultsDocument",
    "TradeOut",
    "empty_document",
    "iso_times",
    "now_iso",
    "order_rows_to_dicts",
]

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
    rerun: RerunComparison | None = Field(None, description="A rerun's comparison with the run it repeated")


def now_iso() -> str:
    """The current UTC time, ISO 8601 with a Z suffix."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def order_rows_to_dicts(
    rows: np.ndarray, symbols: tuple[str, ...], ts: np.ndarray, *, first_trade_id: int = 1
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Engine order rows (see engine.records) as the document's order and trade dicts."""
    records = order_records(rows, ts)
    fills = records[records["status"] == STATUS_FILLED]
    return order_dicts(records, symbols), trade_dicts(fills, symbols, first_id=first_trade_id)


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
    head = make_head(run_id=run_id, config=config, status=status, start_time=start_time, end_time=end_time, error=error)
    return head_document(head)
