"""Shapes of the session endpoints."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from cracktrader.runs.config import BacktestConfig, LiveConfig
from cracktrader.web.analysis.schemas import CandleColumns
from cracktrader.web.runs.schemas import LiveLink, StatusResponse


class SessionPosition(BaseModel):
    """An open position of a session."""

    symbol: str
    size: float
    entry_price: float
    market_price: float


class SessionOrder(BaseModel):
    """A working order of a session (a live one adds its venue state)."""

    order_id: int
    symbol: str
    side: Literal["buy", "sell"]
    amount: float | None = Field(description="None: all in (an entry) or the whole position (an exit)")
    reason: str = Field(description="signal, stop_loss or take_profit (live: also control, adopted)")
    client_order_id: str | None = Field(None, description="Live: the id the venue knows it by, with the session's tag")
    status: str | None = Field(None, description="Live: pending_new, submitted, unknown, open, partially_filled, ...")
    type: str | None = None
    price: float | None = None
    filled: float | None = None
    exchange_order_id: str | None = None


class SessionStatus(StatusResponse):
    """`/runs/{id}/status`: the v1 status fields, and what a session adds (absent for a backtest)."""

    realized_pnl: float | None = None
    unrealized_pnl: float | None = None
    fees_paid: float | None = None
    condition: Literal["ok", "degraded", "halted"] | None = None
    reasons: list[str] | None = Field(None, description="Why the condition is not ok, e.g. STALE_DATA")
    last_candle_time: str | None = None
    data_lag_seconds: float | None = Field(None, description="Seconds past the moment the next candle was due")
    risk: dict[str, Any] | None = Field(
        None, description="Risk limits, denials by code, the last denials, today's loss (exchange_config.risk)"
    )
    decision_lag_ms: dict[str, float] | None = Field(
        None, description="From a live candle's close to the end of the decision on it: last, p50, p99, max, samples"
    )
    balances: dict[str, float] | None = None
    positions: list[SessionPosition] | None = None
    open_orders: list[SessionOrder] | None = None
    live: LiveLink | None = Field(None, description="Live sessions: reconciliation, user stream, clock, drift")


class StopRequest(BaseModel):
    """How to stop a session."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flatten: bool = Field(False, strict=True, description="Also close the positions (at the last close)")


Secret = Annotated[str, Field(min_length=1, max_length=512, strict=True, pattern=r"^[\x21-\x7e]+$")]


class ResumeRequest(BaseModel):
    """How to resume a session; a live one resumed after a restart needs its exchange keys again (never stored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    apiKey: Secret | None = None
    secret: Secret | None = None
    password: Secret | None = None

    def credentials(self) -> dict[str, str]:
        """The keys sent, by ccxt's names."""
        return {k: v for k, v in (("apiKey", self.apiKey), ("secret", self.secret), ("password", self.password)) if v}

    def __repr__(self) -> str:
        return f"ResumeRequest(keys={sorted(self.credentials())})"


class BacktestRunRequest(BacktestConfig):
    """`POST /runs` of a backtest: `/run/backtest`'s body plus `mode: "backtest"`."""

    mode: Literal["backtest"]


def _request_kind(value: Any) -> str:
    mode = value.get("mode") if isinstance(value, dict) else getattr(value, "mode", None)
    return "backtest" if mode == "backtest" else "session"


# A backtest or a session (`mode` paper, the default, or live), told apart by `mode`.
RunRequest = Annotated[
    Annotated[BacktestRunRequest, Tag("backtest")] | Annotated[LiveConfig, Tag("session")],
    Discriminator(_request_kind),
]


class SessionCandles(BaseModel):
    """A session's most recent closed candles of one symbol, as its strategy received them (warm-up included)."""

    run_id: str
    symbol: str
    symbols: list[str]
    timeframe: str
    status: str = Field(description="The session's status (its candles stay readable while it is held in memory)")
    bars: int = Field(description="Candles the session holds for each symbol (warm-up included)")
    truncated: bool = Field(description="Older candles than the returned `limit` exist")
    candles: CandleColumns
