"""Typed responses and requests of the v1 API, defined here so the SDK never imports the server.

Every model allows extra fields: a newer server may add some, and an older client keeps working (they are
reachable through `model_extra` / attribute access).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from cracktrader.client.dashboard import DownloadJob

__all__ = [
    "ACTIVE_STATUSES",
    "FINISHED_STATUSES",
    "Alert",
    "AlertList",
    "ApiKey",
    "ApiKeyCreated",
    "ApiKeyList",
    "BacktestRequest",
    "Balance",
    "ChannelMessage",
    "CheckDifference",
    "CheckItem",
    "CheckResult",
    "CpcvFoldTest",
    "CpcvFolds",
    "CpcvPath",
    "CpcvReport",
    "CpcvSplit",
    "CredentialCheck",
    "CredentialInfo",
    "CredentialList",
    "DetailedStatus",
    "EquityPoint",
    "Event",
    "ExchangeInfo",
    "ExchangeList",
    "FieldChange",
    "Health",
    "LiveRequest",
    "LiveTradingInfo",
    "LogoutResult",
    "Me",
    "Meta",
    "OosSpan",
    "Order",
    "PageInfo",
    "Position",
    "RerunComparison",
    "Results",
    "ResultsPage",
    "RunList",
    "RunResponse",
    "RunSummary",
    "SessionCandle",
    "SessionOrder",
    "SessionPosition",
    "SessionStatus",
    "SkippedCombination",
    "Status",
    "StitchedEquity",
    "StrategyInfo",
    "StrategyList",
    "Sweep",
    "SweepList",
    "SweepProgress",
    "SweepRequest",
    "SweepResults",
    "SweepRow",
    "Tokens",
    "Trade",
    "WalkForward",
    "WalkForwardList",
    "WalkForwardReport",
    "WalkForwardRequest",
    "WalkForwardWindow",
]

ACTIVE_STATUSES = frozenset({"starting", "running"})
FINISHED_STATUSES = frozenset({"completed", "failed", "stopped"})
SWEEP_FINISHED_STATUSES = frozenset({"completed", "cancelled", "failed"})


class _Model(BaseModel):
    """Lenient base: unknown fields are kept, not rejected."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


# Requests ------------------------------------------------------------------------------------------------


class BacktestRequest(_Model):
    """Body of `POST /run/backtest`; fields left None are omitted so the server's defaults apply."""

    strategy_name: str
    symbols: list[str]
    strategy_params: dict[str, Any] | None = None
    timeframe: str | None = None
    start_date: str | datetime | None = None
    end_date: str | datetime | None = None
    initial_cash: float | None = None
    exchange: str | None = None
    commission: float | None = None
    slippage_bps: float | None = None
    latency_bars: int | None = None
    allow_short: bool | None = None
    exchange_rules: bool | None = None

    @field_validator("symbols", mode="before")
    @classmethod
    def _one_symbol(cls, value: Any) -> Any:
        # `symbols="BTC/USDT"` is the common single-symbol case.
        return [value] if isinstance(value, str) else value


class LiveRequest(_Model):
    """Body of `POST /run/live`."""

    strategy_name: str
    symbols: list[str]
    strategy_params: dict[str, Any] | None = None
    timeframe: str | None = None
    exchange: str | None = None
    exchange_config: dict[str, Any] | None = None
    mode: Literal["paper", "live"] = "paper"

    @field_validator("symbols", mode="before")
    @classmethod
    def _one_symbol(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


# Run control and status ----------------------------------------------------------------------------------


class RunResponse(_Model):
    """What start, stop and reset answer."""

    run_id: str | None = None
    status: str
    message: str = ""


class Status(_Model):
    """`GET /status`: lifecycle, progress, cash, value and pnl of the current run."""

    run_id: str | None = None
    status: str
    mode: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    runtime_seconds: float | None = None
    cash: float | None = None
    value: float | None = None
    pnl: float | None = None
    trade_count: int = 0
    error: str | None = None
    error_code: str | None = None
    phase: str | None = None
    progress: float = 0.0
    bars_processed: int = 0
    bars_total: int = 0

    @property
    def is_active(self) -> bool:
        """True while the run is starting or running."""
        return self.status in ACTIVE_STATUSES

    @property
    def is_finished(self) -> bool:
        """True once the run completed, failed or was stopped."""
        return self.status in FINISHED_STATUSES


class Trade(_Model):
    """One fill."""

    id: int
    order_id: int
    timestamp: datetime
    symbol: str
    side: str
    size: float
    price: float
    value: float
    commission: float
    pnl: float | None = None
    return_pct: float | None = None
    reason: str = ""


class Order(_Model):
    """One order and what became of it."""

    id: int
    created_at: datetime
    timestamp: datetime | None = None
    symbol: str
    side: str
    type: str
    status: str
    size: float | None = None
    price: float | None = None
    trigger_price: float | None = None
    commission: float = 0.0
    reason: str = ""


class Position(_Model):
    """A position open at the end of the run."""

    symbol: str
    size: float
    entry_price: float
    market_price: float
    value: float
    unrealized_pnl: float


class EquityPoint(_Model):
    """Portfolio state at a bar's close."""

    timestamp: datetime
    value: float
    cash: float
    pnl: float


class DetailedStatus(Status):
    """`GET /status/detailed`: status plus recent activity, positions, equity, metrics and health."""

    recent_orders: list[Order] = Field(default_factory=list)
    recent_trades: list[Trade] = Field(default_factory=list)
    positions: list[Position] = Field(default_factory=list)
    equity_curve: list[EquityPoint] = Field(default_factory=list)
    performance_metrics: dict[str, Any] = Field(default_factory=dict)
    health: dict[str, Any] = Field(default_factory=dict)


class SessionPosition(_Model):
    """An open position of a paper session."""

    symbol: str
    size: float
    entry_price: float
    market_price: float


class SessionOrder(_Model):
    """A working order of a paper session; `amount` None means all in (an entry) or the whole position (an exit)."""

    order_id: int
    symbol: str
    side: str
    amount: float | None = None
    reason: str = ""


class SessionStatus(Status):
    """`GET /runs/{id}/status` of a session: the v1 status fields, pnl split, condition, balances and book."""

    realized_pnl: float = 0.0
    unrealized_pnl: float = 0.0
    fees_paid: float = 0.0
    condition: str = "ok"
    reasons: list[str] = Field(default_factory=list)
    last_candle_time: datetime | None = None
    data_lag_seconds: float | None = None
    # Limits, denials by code, the last denials and today's loss (exchange_config.risk); None without a gate.
    risk: dict[str, Any] | None = None
    # Milliseconds from a live candle's close to the end of the decision on it: last, p50, p99, max, samples.
    decision_lag_ms: dict[str, float] | None = None
    balances: dict[str, float] = Field(default_factory=dict)
    positions: list[SessionPosition] = Field(default_factory=list)
    open_orders: list[SessionOrder] = Field(default_factory=list)

    @property
    def is_ok(self) -> bool:
        """True when the condition is `ok` (not `degraded` or `halted`)."""
        return self.condition == "ok"


class Balance(_Model):
    """Cash and value of a run's portfolio from `/status` (what `get_balance()` returned before sessions)."""

    run_id: str | None = None
    mode: str | None = None
    status: str
    cash: float | None = None
    value: float | None = None
    pnl: float | None = None
    simulated: bool = True


# Results -------------------------------------------------------------------------------------------------


class PageInfo(_Model):
    """Which slice of a long list a response carries."""

    offset: int
    limit: int
    total: int


class ResultsPage(_Model):
    """How the results were sliced: trade and order pages, equity points kept out of the total."""

    trades: PageInfo
    orders: PageInfo
    equity_points: int
    equity_points_total: int


class FieldChange(_Model):
    """One field that differs between a run and its rerun (`effective_params.fast`, `final_value`, ...)."""

    field: str
    before: Any = None
    after: Any = None


class RerunComparison(_Model):
    """A rerun's `rerun` field: the original run's id and what changed (empty when identical)."""

    of: str
    identical: bool
    changes: list[FieldChange] = Field(default_factory=list)


class Results(_Model):
    """The results document of a run (`GET /results`, `GET /runs/{id}/results`)."""

    run_id: str | None = None
    config: dict[str, Any] | None = None
    status: str
    start_time: datetime | None = None
    end_time: datetime | None = None
    orders: list[Order] = Field(default_factory=list)
    trades: list[Trade] = Field(default_factory=list)
    positions: list[Position] = Field(default_factory=list)
    equity_curve: list[EquityPoint] = Field(default_factory=list)
    performance_metrics: dict[str, Any] = Field(default_factory=dict)
    final_value: float | None = None
    error: str | None = None
    page: ResultsPage | None = None
    rerun: RerunComparison | None = None


# History -------------------------------------------------------------------------------------------------


class RunSummary(_Model):
    """A run in the history (`GET /runs/{id}`); the config has secrets redacted."""

    run_id: str
    mode: str
    status: str
    strategy_name: str
    symbols: list[str]
    timeframe: str
    exchange: str
    config: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None
    final_value: float | None = None
    total_return: float | None = None
    metrics: dict[str, Any] | None = None
    rerun_of: str | None = None


class Alert(_Model):
    """Something a trader must see at once (`GET /alerts`, the `alerts` channel, the webhook).

    `kind`: SESSION_HALTED, BALANCE_DRIFT, RATE_BANNED, ORDER_REJECTED_UNCONFIRMED, ORDER_REVIVED, EXTERNAL_ORDER,
    STREAM_DISCONNECTED, RECONCILIATION_FAILED or SESSION_FAILED (a newer server may add kinds).
    """

    id: str
    kind: str
    severity: Literal["critical", "warning"] | str
    run_id: str
    user_id: int | None = None
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


class AlertList(_Model):
    """A page of alerts, newest first."""

    items: list[Alert]
    total: int
    limit: int
    offset: int


class _GridBacktest(_Model):
    """The backtest fields and the grid that a sweep and a walk-forward request share."""

    strategy_name: str
    symbols: list[str]
    grid: dict[str, list[Any] | str | dict[str, float]]
    strategy_params: dict[str, Any] | None = None
    timeframe: str | None = None
    start_date: str | datetime | None = None
    end_date: str | datetime | None = None
    initial_cash: float | None = None
    exchange: str | None = None
    commission: float | None = None
    slippage_bps: float | None = None
    latency_bars: int | None = None
    allow_short: bool | None = None
    exchange_rules: bool | None = None

    _symbols = field_validator("symbols", mode="before")(lambda cls, v: [v] if isinstance(v, str) else v)


class SweepRequest(_GridBacktest):
    """Body of `POST /sweeps`: a backtest request whose `strategy_params` are fixed, plus the grid.

    `grid` maps parameter names to a list of values, a range `"start:end:step"` (end inclusive) or
    `{"start", "end", "step"}`. The server decides where the sweep runs: a request names no scheduler.
    """

    metrics: list[str] | None = None
    sort: str | None = None
    top_k: int | None = None


class SweepProgress(_Model):
    """Combinations evaluated of those to evaluate, and the estimated seconds left while it runs."""

    done: int
    total: int
    fraction: float
    eta_seconds: float | None = None


class SkippedCombination(_Model):
    """A combination the strategy's parameter schema rejects, with its reason."""

    index: int
    params: dict[str, Any]
    reason: str


class Sweep(_Model):
    """A sweep's status (`GET /sweeps/{id}`): queued, running, completed, cancelled or failed."""

    sweep_id: str
    status: Literal["queued", "running", "completed", "cancelled", "failed"] | str
    strategy_name: str
    progress: SweepProgress
    combinations: int
    evaluated: int
    skipped_count: int
    skipped: list[SkippedCombination] = Field(default_factory=list)
    rows: int
    sort: str
    metrics: list[str]
    top_k: int | None = None
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None
    error_code: str | None = None
    request: dict[str, Any] = Field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in SWEEP_FINISHED_STATUSES


class SweepRow(_Model):
    """One evaluated combination: its rank by the page's sort, grid index, parameters and metrics."""

    rank: int
    index: int
    params: dict[str, Any]
    metrics: dict[str, float | int | None]


class SweepResults(_Model):
    """A page of a sweep's rows, best first by `sort`."""

    sweep_id: str
    status: str
    sort: str
    items: list[SweepRow]
    total: int
    limit: int
    offset: int


class SweepList(_Model):
    """A page of your sweeps, newest first."""

    items: list[Sweep]
    total: int
    limit: int
    offset: int


class CpcvFolds(_Model):
    """Combinatorial purged CV instead of walk-forward: `n_folds` folds, `n_test_folds` tested in each split."""

    n_folds: int
    n_test_folds: int


class WalkForwardRequest(_GridBacktest):
    """Body of `POST /walkforwards`: a sweep's backtest fields and grid, plus walk-forward windows or `cpcv` folds.

    Walk-forward needs `train` and `test` (bars, or durations such as `"90d"`); `cpcv` takes none of
    train/test/step/anchored/partial_last, and `embargo` applies to `cpcv` only (as `cracktrader walkforward`).
    """

    metric: str | None = None
    train: int | str | None = None
    test: int | str | None = None
    step: int | str | None = None
    anchored: bool | None = None
    partial_last: bool | None = None
    cpcv: CpcvFolds | None = None
    purge: int | None = None
    embargo: int | None = None


class OosSpan(_Model):
    """Bars [start, stop) of the run and their dates (start_date inclusive, end_date exclusive)."""

    start: int
    stop: int
    start_date: str
    end_date: str


class StitchedEquity(_Model):
    """Out-of-sample equity stitched across test windows, and its metrics."""

    timestamp: list[int]
    equity: list[float]
    metrics: dict[str, float | int | None]


class WalkForwardWindow(_Model):
    """One window: its train and test bars, the combination chosen in sample and its out-of-sample metrics."""

    index: int
    train: OosSpan
    test: OosSpan
    params: dict[str, Any]
    in_sample: float | None
    out_of_sample: dict[str, float | int | None]


class WalkForwardReport(_Model):
    """A walk-forward's windows and the stitched out-of-sample equity."""

    strategy: str
    symbols: list[str]
    timeframe: str
    exchange: str
    metric: str
    bars: int
    train: int
    test: int
    step: int
    purge: int
    anchored: bool
    partial_last: bool
    windows: list[WalkForwardWindow]
    stitched: StitchedEquity


class CpcvFoldTest(_Model):
    """One test fold of a CPCV split and the metrics of the split's combination on it."""

    fold: int
    span: OosSpan
    metrics: dict[str, float | int | None]


class CpcvSplit(_Model):
    """One CPCV split: its train blocks, the combination chosen on them and its result on each test fold."""

    index: int
    train: list[OosSpan]
    params: dict[str, Any]
    in_sample: float | None
    tests: list[CpcvFoldTest]


class CpcvPath(_Model):
    """One recombined CPCV path: for each fold the split whose test it takes, and the stitched curve's metrics."""

    index: int
    splits: list[int]
    metrics: dict[str, float | int | None]


class CpcvReport(_Model):
    """A CPCV's splits and paths."""

    strategy: str
    symbols: list[str]
    timeframe: str
    exchange: str
    metric: str
    bars: int
    n_folds: int
    n_test_folds: int
    purge: int
    embargo: int
    folds: list[OosSpan]
    splits: list[CpcvSplit]
    paths: list[CpcvPath]


class WalkForward(_Model):
    """A walk-forward's (or CPCV's) status (`GET /walkforwards/{id}`), with its report once completed."""

    walkforward_id: str
    kind: Literal["walk_forward", "cpcv"] | str
    status: Literal["queued", "running", "completed", "cancelled", "failed"] | str
    strategy_name: str
    progress: SweepProgress
    combinations: int
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None
    error_code: str | None = None
    request: dict[str, Any] = Field(default_factory=dict)
    report: WalkForwardReport | CpcvReport | None = None

    @property
    def finished(self) -> bool:
        return self.status in SWEEP_FINISHED_STATUSES


class WalkForwardList(_Model):
    """A page of your walk-forwards, newest first (without their reports)."""

    items: list[WalkForward]
    total: int
    limit: int
    offset: int


class RunList(_Model):
    """A page of run history, newest first."""

    items: list[RunSummary]
    total: int
    limit: int
    offset: int


# Catalog, health, meta -----------------------------------------------------------------------------------


class StrategyInfo(_Model):
    """A strategy class (`kind="class"`, `id` None, read-only) or a stored preset (`kind="preset"`)."""

    id: int | None = None
    kind: str = "class"
    name: str
    description: str = ""
    base_strategy: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    parameters_schema: dict[str, Any] | None = None
    style: str | None = None
    origin: str | None = None
    is_active: bool = True
    read_only: bool = True
    created_at: str | None = None
    updated_at: str | None = None


class StrategyList(_Model):
    """`GET /strategies`: classes then your presets (`skip`/`limit` page), plus modules that failed to load."""

    items: list[StrategyInfo]
    total: int
    skip: int = 0
    limit: int = 0
    load_errors: list[dict[str, Any]] = Field(default_factory=list)


class CheckDifference(_Model):
    """Where a check first failed: the bar (from the first bar checked), its open time, and both decisions."""

    bar: int
    time: datetime
    symbol: str
    expected: str
    found: str


class CheckItem(_Model):
    """One check's verdict: `look_ahead` or `window`."""

    name: str
    passed: bool
    compared: int
    differing: int
    first_difference: CheckDifference | None = None
    detail: str = ""


class CheckResult(_Model):
    """`POST /strategies/{name}/check`: whether a strategy is free of look-ahead and decides the same on its window."""

    strategy: str
    style: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    exchange: str
    symbols: list[str]
    timeframe: str
    start: datetime | None = None
    end: datetime | None = None
    bars: int
    window: int
    entries: int
    exits: int
    passed: bool
    warnings: list[str] = Field(default_factory=list)
    seconds: float
    checks: list[CheckItem]

    def check(self, name: str) -> CheckItem:
        """The check called `name` (`look_ahead` or `window`); KeyError if the server ran none of that name."""
        for item in self.checks:
            if item.name == name:
                return item
        raise KeyError(f"no check named {name!r}; the server ran {[c.name for c in self.checks]}")

    @property
    def failed(self) -> list[CheckItem]:
        """The checks that failed (empty when `passed`)."""
        return [c for c in self.checks if not c.passed]


class LiveTradingInfo(_Model):
    """Whether live trading can use an exchange (`supported`), each of its needs, and the ones it lacks."""

    supported: bool = False
    spot: bool = False
    client_order_ids: bool = False
    order_queries: bool = False
    sandbox: bool = False
    missing: list[str] = Field(default_factory=list)


class ExchangeInfo(_Model):
    """An exchange a run can use."""

    id: str
    name: str
    sandbox: bool = False
    ohlcv: bool = False
    timeframes: list[str] = Field(default_factory=list)
    notes: str = ""
    live_trading: LiveTradingInfo | None = None  # servers before 2026-12 do not send it


class CredentialInfo(_Model):
    """Stored exchange credentials as the server shows them: never a secret."""

    name: str
    exchange: str
    created_at: datetime
    last_used_at: datetime | None = None
    rotated_at: datetime | None = None


class CredentialList(_Model):
    """`GET /credentials`: your stored credentials by name."""

    credentials: list[CredentialInfo]


class CredentialCheck(_Model):
    """`POST /credentials/{name}/test`: ok, or the exchange's error code (AUTH_FAILED, NETWORK_ERROR, ...)."""

    ok: bool
    code: str
    message: str = ""


class ExchangeList(_Model):
    """`GET /exchanges`: exchanges and the server's default."""

    items: list[ExchangeInfo]
    total: int
    default: str | None = None


class Health(_Model):
    """`GET /health`: overall status, versions, checks and request metrics."""

    status: str
    version: str | None = None
    api_version: str | None = None
    checks: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime | None = None

    @property
    def is_healthy(self) -> bool:
        """True when healthy or degraded (only optional checks failed)."""
        return self.status in ("healthy", "degraded")


class Meta(_Model):
    """`GET /meta`: API and app versions and announced deprecations."""

    api_version: str
    app_version: str
    deprecation_policy: dict[str, Any] = Field(default_factory=dict)
    deprecations: list[dict[str, Any]] = Field(default_factory=list)
    changelog: str | None = None


# Accounts ------------------------------------------------------------------------------------------------


class Tokens(_Model):
    """`POST /auth/login` and `/auth/refresh`: an access token and the refresh token that renews it."""

    access_token: str
    token_type: str = "bearer"
    refresh_token: str
    expires_in: int


class LogoutResult(_Model):
    """`POST /auth/logout`: how many refresh tokens were revoked."""

    revoked: int


class Me(_Model):
    """`GET /auth/me`: who the credentials belong to."""

    user_id: int | None = None
    username: str
    role: str
    scopes: list[str] = Field(default_factory=list)
    auth: str
    api_key_id: int | None = None
    auth_mode: str


class ApiKey(_Model):
    """An API key without its secret."""

    id: int
    name: str
    prefix: str
    scopes: list[str] = Field(default_factory=list)
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    user_id: int


class ApiKeyCreated(ApiKey):
    """A new API key: `key` is in this answer only."""

    key: str


class ApiKeyList(_Model):
    """`GET /auth/apikeys`."""

    items: list[ApiKey]


# Streams -------------------------------------------------------------------------------------------------


class SessionCandle(_Model):
    """A session's closed candle (a `candle` event's `t, o, h, l, c, v`) as its strategy received it; `t`: UTC ms."""

    run_id: str
    symbol: str
    timeframe: str
    t: int
    open: float | None = Field(alias="o")
    high: float | None = Field(alias="h")
    low: float | None = Field(alias="l")
    close: float | None = Field(alias="c")
    volume: float | None = Field(alias="v")


class Event(_Model):
    """A `/ws/status` message: `snapshot`, `status_update`, `trade_execution`, `error`, `alert`, `sweep_progress`,
    `download_progress`, `candle` or `heartbeat`."""

    type: str
    payload: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime | None = None
    # The run's event number on a one-run stream (`run_id=`); resume after it with `stream_status(since=seq)`.
    seq: int | None = None

    def status(self) -> Status | None:
        """The payload as a `Status` for `snapshot` and `status_update` events, else None."""
        if self.type in ("snapshot", "status_update"):
            return Status.model_validate(self.payload)
        return None

    def candle(self) -> SessionCandle | None:
        """The payload as a `SessionCandle` for `candle` events (`stream_status(candles=True)`), else None."""
        return SessionCandle.model_validate(self.payload) if self.type == "candle" else None

    def download(self) -> DownloadJob | None:
        """The payload as a `DownloadJob` for `download_progress` events, else None."""
        if self.type != "download_progress":
            return None
        # Imported here: the dashboard's models build on this module.
        from cracktrader.client.dashboard import DownloadJob

        return DownloadJob.model_validate(self.payload)


class ChannelMessage(NamedTuple):
    """A `/ws` message: the channel (`status`, `orders`, `trades`, `equity`) and its data."""

    channel: str
    data: dict[str, Any]
