"""A sweep request for the server (a backtest request plus the grid) and the documents the server answers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, model_validator

from cracktrader.runs.config import BacktestConfig
from cracktrader.sweeps.sweep import DEFAULT_METRICS

SweepStatusValue = Literal["queued", "running", "completed", "cancelled", "failed"]
ACTIVE_STATUSES = frozenset({"queued", "running"})
# Skipped combinations kept with a sweep (the count is always exact): their reasons repeat.
MAX_SKIPPED_KEPT = 100
MAX_GRID_PARAMS = 20
MAX_GRID_VALUES = 10_000

GridValue = StrictInt | StrictFloat | bool | Annotated[str, Field(max_length=200)] | None


class GridRange(BaseModel):
    """`{"start", "end", "step"}`: start, start + step, ... up to end inclusive."""

    model_config = ConfigDict(extra="forbid")

    start: StrictInt | StrictFloat = Field(allow_inf_nan=False)
    end: StrictInt | StrictFloat = Field(allow_inf_nan=False)
    step: StrictInt | StrictFloat = Field(1, allow_inf_nan=False)

    def as_range(self) -> str:
        """The same range as the CLI's `start:end:step`."""
        return f"{self.start}:{self.end}:{self.step}"


GridEntry = (
    Annotated[list[GridValue], Field(min_length=1, max_length=MAX_GRID_VALUES)]
    | Annotated[str, Field(min_length=1, max_length=200, examples=["5:50:5"])]
    | GridRange
)


class SweepRequest(BacktestConfig):
    """`POST /sweeps`: a backtest request whose `strategy_params` are the fixed parameters, plus the grid.

    The server's configuration decides where the sweep runs: a request names no executor nor scheduler.
    """

    model_config = ConfigDict(extra="forbid")

    grid: dict[str, GridEntry] = Field(
        ...,
        min_length=1,
        max_length=MAX_GRID_PARAMS,
        description='Parameter name to a list of values, a range "start:end:step" (end inclusive) or '
        "{start, end, step}",
        # Swept names the example's strategy (TestStrategy, period 20 fixed) takes: a request that works as printed.
        examples=[
            {"slow": "40:80:20", "stop_loss": [0.02, 0.05], "take_profit": {"start": 0.05, "end": 0.1, "step": 0.05}}
        ],
    )
    metrics: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=lambda: list(DEFAULT_METRICS), min_length=1, max_length=64
    )
    sort: str = Field("sharpe_ratio", max_length=64, description="The metric rows are ranked by (rank 1: best)")
    top_k: int | None = Field(None, ge=1, le=1_000_000, strict=True, description="Keep only the k best rows")

    @model_validator(mode="after")
    def _keep_the_sort(self) -> SweepRequest:
        # Rows are ranked by `sort`: it is kept even when `metrics` does not name it.
        if self.sort not in self.metrics:
            self.metrics = [*self.metrics, self.sort]
        return self

    def sweep_grid(self) -> dict[str, Any]:
        """The grid as `sweeps.grid` reads it (ranges as `start:end:step`)."""
        return {k: v.as_range() if isinstance(v, GridRange) else v for k, v in self.grid.items()}

    def backtest_config(self, params: dict[str, Any]) -> BacktestConfig:
        """The single backtest of one combination (`params` includes the fixed ones)."""
        fields = self.model_dump(include=set(BacktestConfig.model_fields), exclude={"strategy_class"})
        return BacktestConfig.model_validate({**fields, "strategy_params": params})


class SweepProgress(BaseModel):
    """How far a sweep is: combinations evaluated of those to evaluate, and the estimated time left."""

    done: int
    total: int
    fraction: float = Field(description="done / total, 0..1")
    eta_seconds: float | None = Field(description="Estimated seconds left while it runs, else null")


class SkippedOut(BaseModel):
    """A combination the strategy's parameter schema rejects."""

    index: int
    params: dict[str, Any]
    reason: str


class SweepDocument(BaseModel):
    """A sweep's status: its request, progress, counts and, once it ended, how."""

    sweep_id: str
    status: SweepStatusValue
    strategy_name: str
    progress: SweepProgress
    combinations: int = Field(description="Combinations of the grid, skipped ones included")
    evaluated: int = Field(description="Combinations evaluated (fewer than valid ones when cancelled)")
    skipped_count: int
    skipped: list[SkippedOut] = Field(description=f"The first {MAX_SKIPPED_KEPT} skipped combinations")
    rows: int = Field(description="Result rows kept (top_k at most)")
    sort: str
    metrics: list[str]
    top_k: int | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    error: str | None
    error_code: str | None
    request: dict[str, Any]


class SweepRowOut(BaseModel):
    """One evaluated combination: its rank (by the page's sort), grid index, parameters and metrics."""

    rank: int
    index: int
    params: dict[str, Any]
    metrics: dict[str, float | int | None]


class SweepResultsPage(BaseModel):
    """A page of a sweep's rows, best first by `sort`."""

    sweep_id: str
    status: SweepStatusValue
    sort: str
    items: list[SweepRowOut]
    total: int
    limit: int
    offset: int


class SweepList(BaseModel):
    """A page of the caller's sweeps, newest first."""

    items: list[SweepDocument]
    total: int
    limit: int
    offset: int
