"""Shapes of the session endpoints."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cracktrader.web.runs.schemas import StatusResponse


class SessionPosition(BaseModel):
    """An open position of a session."""

    symbol: str
    size: float
    entry_price: float
    market_price: float


class SessionOrder(BaseModel):
    """A working order of a session."""

    order_id: int
    symbol: str
    side: Literal["buy", "sell"]
    amount: float | None = Field(description="None: all in (an entry) or the whole position (an exit)")
    reason: str = Field(description="signal, stop_loss or take_profit")


class SessionStatus(StatusResponse):
    """`/runs/{id}/status` of a paper session: the v1 status fields, and what a session adds."""

    realized_pnl: float
    unrealized_pnl: float
    fees_paid: float
    condition: Literal["ok", "degraded", "halted"]
    reasons: list[str] = Field(description="Why the condition is not ok, e.g. STALE_DATA")
    last_candle_time: str | None
    data_lag_seconds: float | None = Field(description="Seconds past the moment the next candle was due")
    risk: dict[str, Any] | None = Field(
        None, description="Risk limits, denials by code, the last denials, today's loss (exchange_config.risk)"
    )
    decision_lag_ms: dict[str, float] | None = Field(
        None, description="From a live candle's close to the end of the decision on it: last, p50, p99, max, samples"
    )
    balances: dict[str, float]
    positions: list[SessionPosition]
    open_orders: list[SessionOrder]


class StopRequest(BaseModel):
    """How to stop a session."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flatten: bool = Field(False, strict=True, description="Also close the positions (at the last close)")
