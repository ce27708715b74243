"""A walk-forward (or CPCV) request for the server and the documents the server answers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from cracktrader.runs.config import BacktestConfig
from cracktrader.sweeps.cpcv import CpcvReport
from cracktrader.sweeps.request import MAX_GRID_PARAMS, GridEntry, GridRange, SweepProgress, SweepStatusValue
from cracktrader.sweeps.walkforward import WalkForwardReport

WalkForwardKind = Literal["walk_forward", "cpcv"]
# A window length: bars, or a duration such as "90d" (nominal bars of the timeframe), as the CLI's --train.
Length = StrictInt | Annotated[str, Field(min_length=1, max_length=32, examples=["90d"])]


class CpcvFolds(BaseModel):
    """Combinatorial purged CV instead of walk-forward: `n_folds` folds, `n_test_folds` tested in each split."""

    model_config = ConfigDict(extra="forbid")

    n_folds: int = Field(..., ge=2, le=100, strict=True)
    n_test_folds: int = Field(..., ge=1, le=99, strict=True)


class WalkForwardRequest(BacktestConfig):
    """`POST /walkforwards`: a backtest request whose `strategy_params` are the fixed parameters, plus the grid and
    either the walk-forward windows (train, test, step, anchored, partial_last) or `cpcv` folds.

    The same choices as `cracktrader walkforward`: `cpcv` takes no train/test/step/anchored/partial_last, and
    `embargo` applies to `cpcv` only.
    """

    model_config = ConfigDict(
        extra="forbid",
        # The whole body: composed from the fields' own examples it would lack train and test (both optional).
        json_schema_extra={
            "examples": [
                {
                    "strategy_name": "SmaCross",
                    "symbols": ["BTC/USDT"],
                    "timeframe": "1h",
                    "start_date": "2024-01-01T00:00:00Z",
                    "end_date": "2024-06-30T23:59:59Z",
                    "exchange": "synthetic",
                    "grid": {"fast": "5:20:5", "slow": "40:80:20"},
                    "metric": "sharpe_ratio",
                    "train": "60d",
                    "test": "30d",
                }
            ]
        },
    )

    grid: dict[str, GridEntry] = Field(
        ...,
        min_length=1,
        max_length=MAX_GRID_PARAMS,
        description='Parameter name to a list of values, a range "start:end:step" (end inclusive) or '
        "{start, end, step}",
        examples=[{"slow": "40:80:20"}],
    )
    metric: str = Field("sharpe_ratio", max_length=64, description="Each train window's best combination by this")
    train: Length | None = Field(None, description="Train window: bars, or a duration such as 90d")
    test: Length | None = Field(None, description="Test window: bars, or a duration such as 30d")
    step: Length | None = Field(None, description="Bars (or duration) between test starts; default: test")
    anchored: bool = Field(False, description="Every train window starts at the first bar")
    partial_last: bool = Field(False, description="Keep a last test window cut short by the end of the data")
    cpcv: CpcvFolds | None = Field(None, description="Combinatorial purged CV instead of walk-forward")
    purge: int = Field(0, ge=0, le=1_000_000, strict=True, description="Bars dropped from training next to tests")
    embargo: int = Field(0, ge=0, le=1_000_000, strict=True, description="With cpcv: further bars after each test")

    @model_validator(mode="after")
    def _one_scheme(self) -> WalkForwardRequest:
        # The CLI's rules (cracktrader walkforward): one scheme, and only its own options.
        if self.cpcv is not None:
            if self.train is not None or self.test is not None or self.step is not None:
                raise ValueError("cpcv takes no train, test or step")
            if self.anchored or self.partial_last:
                raise ValueError("cpcv takes no anchored or partial_last")
        else:
            if self.train is None or self.test is None:
                raise ValueError("walk-forward needs train and test (bars, or durations such as 90d), or cpcv")
            if self.embargo:
                raise ValueError("embargo applies to cpcv only; walk-forward tests never precede training")
        return self

    @property
    def kind(self) -> WalkForwardKind:
        """Which scheme the request runs."""
        return "cpcv" if self.cpcv is not None else "walk_forward"

    def sweep_grid(self) -> dict[str, Any]:
        """The grid as `sweeps.grid` reads it (ranges as `start:end:step`)."""
        return {k: v.as_range() if isinstance(v, GridRange) else v for k, v in self.grid.items()}

    def options(self) -> dict[str, Any]:
        """The costs and fills every backtest of the study takes (as `walk_forward`'s `**options`)."""
        return self.model_dump(
            include={"initial_cash", "commission", "slippage_bps", "latency_bars", "allow_short", "exchange_rules"}
        )

    def backtest_config(self, params: dict[str, Any]) -> BacktestConfig:
        """The single backtest of one combination over the whole range (`params` includes the fixed ones)."""
        fields = self.model_dump(include=set(BacktestConfig.model_fields), exclude={"strategy_class"})
        return BacktestConfig.model_validate({**fields, "strategy_params": params})


class WalkForwardDocument(BaseModel):
    """A walk-forward's status, progress (windows, or CPCV splits, done) and, once it completed, its report."""

    walkforward_id: str
    kind: WalkForwardKind
    status: SweepStatusValue
    strategy_name: str
    progress: SweepProgress = Field(description="Windows (CPCV: splits) done of the total, and the time left")
    combinations: int = Field(description="Combinations of the grid swept on each train window")
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    error: str | None
    error_code: str | None
    request: dict[str, Any]
    report: WalkForwardReport | CpcvReport | None = Field(
        None, description="When completed: the walk-forward's (kind walk_forward) or CPCV's report; null in lists"
    )


class WalkForwardList(BaseModel):
    """A page of the caller's walk-forwards, newest first (without their reports)."""

    items: list[WalkForwardDocument]
    total: int
    limit: int
    offset: int
