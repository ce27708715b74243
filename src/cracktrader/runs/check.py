"""`cracktrader check` and `POST /strategies/{name}/check`: load the candles, run the engine's checks, one document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cracktrader.data.candles import ms_to_iso
from cracktrader.data.timeframes import parse_timeframe
from cracktrader.engine.check import CheckReport, check_strategy
from cracktrader.errors import UserInputError
from cracktrader.runs.backtest import PreparedBacktest, prepare_backtest, resolve_range
from cracktrader.runs.config import BacktestConfig, RunDate, Symbol, clean_symbols
from cracktrader.runs.strategy_errors import strategy_errors
from cracktrader.settings import Settings, get_settings


class CheckRequest(BaseModel):
    """What to check a strategy on: its parameters and the candles (as a backtest names them)."""

    model_config = ConfigDict(extra="forbid")

    strategy_params: dict[str, Any] = Field(default_factory=dict, examples=[{"fast": 10, "slow": 30}])
    symbols: list[Symbol] = Field(["BTC/USDT"], min_length=1, max_length=50, examples=[["BTC/USDT"]])
    timeframe: str = Field("1h", min_length=1, max_length=16, examples=["1h"])
    start_date: RunDate = Field(None, description="Default: the last 1000 bars (as a backtest)")
    end_date: RunDate = Field(None)
    exchange: str = Field("binance", min_length=1, max_length=64, examples=["synthetic"])

    _symbols = field_validator("symbols")(lambda cls, value: clean_symbols(value))

    def backtest_config(self, strategy_name: str) -> BacktestConfig:
        """The equivalent backtest request (costs at their defaults: decisions do not depend on them)."""
        return BacktestConfig(strategy_name=strategy_name, **self.model_dump())


class CheckTooLargeError(UserInputError):
    """A check over more bars than a synchronous check admits."""

    code = "CHECK_TOO_LARGE"
    status_code = 422


class DifferenceDocument(BaseModel):
    """Where a check first failed, and what each side decided."""

    bar: int = Field(description="Bar index from the first bar checked")
    time: str = Field(description="Open time of that bar (ISO 8601, UTC)")
    symbol: str
    expected: str = Field(description="The full-history (or unperturbed) decision")
    found: str = Field(description="The decision on the window (or with the future changed)")


class CheckItem(BaseModel):
    """One check's verdict."""

    name: Literal["look_ahead", "window"]
    passed: bool
    compared: int = Field(description="Decisions compared (bars x symbols)")
    differing: int
    first_difference: DifferenceDocument | None
    detail: str


class CheckDocument(BaseModel):
    """The result of `cracktrader check` (CLI `--json`, HTTP and SDK share it)."""

    strategy: str
    style: Literal["vectorized", "event"]
    parameters: dict[str, Any] = Field(description="Effective parameters, defaults included")
    exchange: str
    symbols: list[str]
    timeframe: str
    start: str | None
    end: str | None
    bars: int
    window: int = Field(description="Bars of the live window: the strategy's warmup()")
    entries: int = Field(description="Opening fills of the full-history backtest")
    exits: int = Field(description="Closing fills of the full-history backtest")
    passed: bool
    warnings: list[str] = Field(description="Why a pass may prove little (no trades, fewer bars than the window)")
    seconds: float
    checks: list[CheckItem]


def check_size(config: BacktestConfig, settings: Settings) -> None:
    """Refuse, before loading anything, a check over more bars per symbol than CRACKTRADER_MAX_CHECK_BARS."""
    tf = parse_timeframe(config.timeframe)
    start, end = resolve_range(config, tf, settings)
    bars = tf.count(start, end)
    _refuse_over_limit(bars, settings)


def _refuse_over_limit(bars: int, settings: Settings) -> None:
    limit = settings.max_check_bars
    if bars > limit:
        raise CheckTooLargeError(
            f"A check covers at most {limit:,} bars per symbol (CRACKTRADER_MAX_CHECK_BARS); this one asks for "
            f"{bars:,}: shorten the range or use a longer timeframe",
            details={"bars": bars, "max_bars": limit},
        )


def run_check(config: BacktestConfig, *, settings: Settings | None = None) -> CheckDocument:
    """Load the candles a backtest of `config` would use and check the strategy on them."""
    settings = settings or get_settings()
    check_size(config, settings)
    prepared = prepare_backtest(config, settings=settings)
    _refuse_over_limit(prepared.data.n_bars, settings)
    return check_prepared(prepared)


def check_prepared(prepared: PreparedBacktest) -> CheckDocument:
    """Check a prepared backtest's strategy on its data; errors in the strategy's code name its file and line."""
    cls = type(prepared.strategy)
    params = prepared.strategy.params.model_dump()
    with strategy_errors(cls):
        report = check_strategy(lambda: cls(params), prepared.data, prepared.sim)
    return to_document(report, prepared)


def to_document(report: CheckReport, prepared: PreparedBacktest) -> CheckDocument:
    """The typed document of a report."""
    cfg = prepared.config
    ts = prepared.data.timestamp
    return CheckDocument(
        strategy=cfg.strategy_name,
        style=report.style,
        parameters=prepared.strategy.params.model_dump(mode="json"),
        exchange=cfg.exchange,
        symbols=list(report.symbols),
        timeframe=cfg.timeframe,
        start=ms_to_iso(int(ts[0])) if len(ts) else None,
        end=ms_to_iso(int(ts[-1])) if len(ts) else None,
        bars=report.bars,
        window=report.window,
        entries=report.entries,
        exits=report.exits,
        passed=report.passed,
        warnings=report.warnings,
        seconds=round(report.seconds, 3),
        checks=[
            CheckItem(
                name=c.name,
                passed=c.passed,
                compared=c.compared,
                differing=c.differing,
                first_difference=None
                if c.first_difference is None
                else DifferenceDocument(
                    bar=c.first_difference.bar,
                    time=ms_to_iso(c.first_difference.timestamp),
                    symbol=c.first_difference.symbol,
                    expected=c.first_difference.expected,
                    found=c.first_difference.found,
                ),
                detail=c.detail,
            )
            for c in report.checks
        ],
    )
