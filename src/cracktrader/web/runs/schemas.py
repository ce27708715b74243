"""Request and response models of run control, status and results (seed 003's shapes)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from cracktrader.runs.document import EquityPoint, OrderOut, PositionOut, ResultsDocument, RunStatus, TradeOut


class LiveEcho(BaseModel):
    """What a live session will do, as its start answers it (a real-money start after its checks)."""

    exchange: str
    sandbox: bool
    capital: float | None
    quote: str
    tradable_balance: float | None = Field(description="The account's free quote currency when the checks read it")
    risk: dict[str, float | int | None] | None = Field(description="The risk limits the session trades under")


class RunResponse(BaseModel):
    """What every run-control endpoint answers."""

    run_id: str | None
    status: RunStatus
    message: str
    live: LiveEcho | None = Field(None, description="A live session's start: what it will do (absent otherwise)")

    @model_serializer(mode="wrap")
    def _without_absent_live(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Seed 003's answer has three fields: `live` is added only where a live session started.
        out: dict[str, Any] = handler(self)
        if out.get("live") is None:
            out.pop("live", None)
        return out


class StatusResponse(BaseModel):
    """Run lifecycle fields of the current run."""

    run_id: str | None
    status: RunStatus
    mode: str | None
    start_time: str | None
    end_time: str | None
    runtime_seconds: float | None
    cash: float | None
    value: float | None
    pnl: float | None
    trade_count: int
    error: str | None
    error_code: str | None = None
    phase: str | None = None
    progress: float = Field(0.0, description="Fraction of bars simulated, 0..1")
    bars_processed: int = 0
    bars_total: int = 0


class ReconciliationReport(BaseModel):
    """What the last reconciliation with the venue found, by kind."""

    looked_up: int
    updated: int
    missed_fills: int
    adopted: int
    external_orders: int
    unconfirmed: int
    at: int | None = Field(None, description="When it ran (ms since the epoch)")


class LiveLink(BaseModel):
    """A live session's link to the venue."""

    reconciliation: ReconciliationReport
    reconciliations: int
    user_stream: Literal["up", "down"]
    clock_offset_ms: int | None = Field(None, description="The venue's clock minus ours, median of samples")
    balance_drift: dict[str, float] = Field(description="Base assets whose balance differs from what is expected")
    orders_sent: int
    unknown_orders: list[str] = Field(description="Client ids of orders whose outcome is being looked up")
    watch_list: list[str] = Field(description="Client ids of rejected_unconfirmed orders watched for 24 h")
    awaiting_credentials: bool = Field(description="Resumed after a restart: POST the keys to /runs/{id}/resume")


class DetailedStatusResponse(StatusResponse):
    """`/status` plus recent activity, positions, equity and health (a session: its condition, a live one its link)."""

    recent_orders: list[OrderOut]
    recent_trades: list[TradeOut]
    positions: list[PositionOut]
    equity_curve: list[EquityPoint]
    performance_metrics: dict[str, float | int | None]
    health: dict[str, Any]
    condition: Literal["ok", "degraded", "halted"] | None = None
    reasons: list[str] | None = None
    live: LiveLink | None = None


class PageInfo(BaseModel):
    """Which slice of a long list a response carries."""

    offset: int
    limit: int
    total: int


class ResultsPage(BaseModel):
    """Slices of the results document: how much was left out."""

    trades: PageInfo
    orders: PageInfo
    equity_points: int
    equity_points_total: int


class ResultsResponse(ResultsDocument):
    """The results document, with long lists sliced (see `page`)."""

    page: ResultsPage | None = None


class RunSummaryOut(BaseModel):
    """A run in the history."""

    run_id: str
    mode: str
    status: str
    strategy_name: str
    symbols: list[str]
    timeframe: str
    exchange: str
    config: dict[str, Any] = Field(
        description="The request as kept: exchange_config allowlisted (exchange_config_dropped_keys counts the rest), "
        "at most 4 KB (config_truncated)"
    )
    created_at: str | None
    started_at: str | None
    ended_at: str | None
    error: str | None
    final_value: float | None
    total_return: float | None
    metrics: dict[str, Any] | None
    rerun_of: str | None = Field(None, description="The run this one reran (POST /runs/{id}/rerun)")


class RunListResponse(BaseModel):
    """A page of run history."""

    items: list[RunSummaryOut]
    total: int
    limit: int
    offset: int
