"""Execute a backtest configuration: load data through the store, run the engine, build the document."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cracktrader import __version__
from cracktrader.data import service
from cracktrader.data.candles import Candles, ms_to_iso, to_ms
from cracktrader.data.sources.base import CandleSource
from cracktrader.data.timeframes import Timeframe, parse_timeframe
from cracktrader.engine.backtest import BacktestResult, OnOrders, Progress, ShouldStop, run_backtest
from cracktrader.engine.broker import SimSettings
from cracktrader.engine.market import MarketData, align
from cracktrader.engine.strategy import Strategy
from cracktrader.errors import InvalidDateRangeError, UserInputError
from cracktrader.exchanges.markets import market_rules
from cracktrader.runs.config import BacktestConfig, redact
from cracktrader.runs.document import now_iso
from cracktrader.runs.inputs import CostInputs, RunInputs, StrategyInputs, fingerprint, strategy_source_sha256
from cracktrader.runs.results import RunResults, from_backtest
from cracktrader.runs.strategy_errors import strategy_errors
from cracktrader.settings import Settings, get_settings
from cracktrader.strategies.registry import load_registry

# Called with (symbol, bars fetched, bars expected) while candles download.
DataProgress = Callable[[str, int, int], None]


@dataclass(slots=True)
class PreparedBacktest:
    """A validated configuration with its strategy, data and costs, ready to run."""

    config: BacktestConfig
    strategy: Strategy
    data: MarketData
    sim: SimSettings
    timeframe: Timeframe
    inputs: RunInputs


def resolve_range(config: BacktestConfig, tf: Timeframe, settings: Settings) -> tuple[int, int]:
    """[start, end) in ms: bars opening before end_date; defaults to the last `default_lookback_bars` bars.

    Without either date the range ends after the last bar stored for every symbol (directly or in a finer
    timeframe), or now when nothing is stored and for `synthetic`.
    """
    end = to_ms(config.end_date)
    start = to_ms(config.start_date)
    if end is None and start is None:
        # Without dates, the last bars of what is stored (an imported CSV ends in the past), else up to now.
        end = service.stored_range_end(config.exchange, config.symbols, tf, settings)
    if end is None:
        end = tf.floor(int(time.time() * 1000))
    if start is None:
        start = end - settings.default_lookback_bars * tf.ms
    if start >= end:
        raise InvalidDateRangeError(
            f"start_date ({config.start_date}) must be before end_date ({config.end_date})",
            details={"start_date": config.start_date, "end_date": config.end_date},
        )
    return start, end


# Peak memory of a run, measured with tracemalloc on 1M-bar runs of both simulators (152 B per bar with one
# symbol, ~100 B per bar-symbol with four): candles, aligned arrays and signals per symbol, plus the time axis
# (equity, cash, timestamps) per bar; rounded up.
BYTES_PER_BAR_SYMBOL = 100
BYTES_PER_BAR = 80


class RunTooLargeError(UserInputError):
    """A run asks for more bars or memory than this server admits."""

    code = "RUN_TOO_LARGE"
    status_code = 422


def check_run_size(config: BacktestConfig, tf: Timeframe, start: int, end: int, settings: Settings) -> int:
    """Refuse, before any work, a run over the bar or memory limit; returns its bars per symbol."""
    bars = tf.count(start, end)
    symbols = len(config.symbols)
    total = bars * symbols
    memory_mb = (total * BYTES_PER_BAR_SYMBOL + bars * BYTES_PER_BAR) / 2**20
    details = {
        "bars_per_symbol": bars,
        "symbols": symbols,
        "total_bars": total,
        "max_total_bars": settings.max_run_bars,
        "estimated_memory_mb": round(memory_mb, 1),
        "max_memory_mb": settings.max_run_memory_mb,
    }
    if total > settings.max_run_bars:
        raise RunTooLargeError(
            f"The run is {bars:,} {tf} bars x {symbols} symbols = {total:,} bars, more than this server's limit "
            f"of {settings.max_run_bars:,} (CRACKTRADER_MAX_RUN_BARS): shorten the range, use a longer "
            "timeframe or fewer symbols",
            details=details,
        )
    if memory_mb > settings.max_run_memory_mb:
        raise RunTooLargeError(
            f"The run would need about {memory_mb:,.0f} MB, more than this server's limit of "
            f"{settings.max_run_memory_mb:,} MB (CRACKTRADER_MAX_RUN_MEMORY_MB)",
            details=details,
        )
    return bars


def prepare_backtest(
    config: BacktestConfig,
    *,
    settings: Settings | None = None,
    source: CandleSource | None = None,
    data_progress: DataProgress | None = None,
    strategy_cls: type[Strategy] | None = None,
) -> PreparedBacktest:
    """Validate the strategy first (cheap), then the market, then load candles (`strategy_cls`: run this class)."""
    settings = settings or get_settings()
    class_name = config.strategy_class or config.strategy_name
    if strategy_cls is None:
        registry = load_registry(settings)
        strategy_cls = registry.get(class_name)
        origin = registry.origins.get(class_name, "unknown")
    else:
        origin = "pinned"  # the copy of its source the session kept when it started
    with strategy_errors(strategy_cls):
        strategy = strategy_cls(config.strategy_params)
    tf = parse_timeframe(config.timeframe)
    start, end = resolve_range(config, tf, settings)
    check_run_size(config, tf, start, end, settings)
    candles: dict[str, Candles] = {}
    resampled: dict[str, str | None] = {}
    for symbol in config.symbols:
        cb = (lambda done, total, s=symbol: data_progress(s, done, total)) if data_progress else None
        # Without an explicit source the store is read first and the exchange is only contacted for gaps.
        loaded = service.load_run_candles(
            config.exchange, symbol, tf, start, end, source=source, progress=cb, settings=settings
        )
        candles[symbol], resampled[symbol] = loaded.candles, loaded.resampled_from
    fees = (
        source.fee_rates(config.symbols[0])
        if source is not None
        else service.exchange_fee_rates(config.exchange, config.symbols[0], settings)
    )
    maker, taker = _fees(config, fees, settings)
    rules = None
    if config.exchange_rules:
        commission = None if config.commission is None else (config.commission, config.commission)
        rules = market_rules(config.exchange, config.symbols, settings=settings, fees=commission)
        maker, taker = rules[0].maker_fee, rules[0].taker_fee
    sim = SimSettings(
        initial_cash=config.initial_cash,
        maker_fee=maker,
        taker_fee=taker,
        slippage=config.slippage_bps / 10_000.0,
        latency=config.latency_bars,
        allow_short=config.allow_short,
        rules=rules,
    )
    inputs = RunInputs(
        effective_params=strategy.params.model_dump(mode="json"),
        strategy=StrategyInputs(
            name=config.strategy_name,
            class_name=strategy_cls.name,
            origin=origin,
            source_sha256=strategy_source_sha256(strategy_cls),
        ),
        cracktrader_version=__version__,
        costs=CostInputs(
            maker_fee=sim.maker_fee,
            taker_fee=sim.taker_fee,
            slippage=sim.slippage,
            latency=sim.latency,
            allow_short=sim.allow_short,
            initial_cash=sim.initial_cash,
        ),
        start=ms_to_iso(start),
        end=ms_to_iso(end),
        data={
            symbol: fingerprint(bars, exchange=config.exchange, timeframe=tf.name, resampled_from=resampled.get(symbol))
            for symbol, bars in candles.items()
        },
    )
    return PreparedBacktest(config, strategy, align(candles, tf.periods_per_year), sim, tf, inputs)


def _fees(config: BacktestConfig, exchange_fees: tuple[float, float] | None, s: Settings) -> tuple[float, float]:
    if config.commission is not None:
        return config.commission, config.commission
    if exchange_fees is not None:
        return exchange_fees
    return s.default_fee_rate, s.default_fee_rate


def run_prepared(
    prepared: PreparedBacktest,
    *,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    on_orders: OnOrders | None = None,
) -> BacktestResult:
    """Run the engine on prepared data; an exception in the strategy's own code names its file and line."""
    with strategy_errors(type(prepared.strategy)):
        return run_backtest(
            prepared.strategy,
            prepared.data,
            prepared.sim,
            progress=progress,
            should_stop=should_stop,
            on_orders=on_orders,
        )


def document_config(prepared: PreparedBacktest) -> dict[str, Any]:
    """The config recorded in results: the request (secrets redacted), the costs used and the run's `inputs`."""
    cfg = redact(prepared.config.model_dump())
    cfg["maker_fee"] = prepared.sim.maker_fee
    cfg["taker_fee"] = prepared.sim.taker_fee
    cfg["inputs"] = redact({"inputs": prepared.inputs.document()})["inputs"]
    if prepared.sim.rules is not None:
        cfg["market_rules"] = {s: r.to_dict() for s, r in zip(prepared.config.symbols, prepared.sim.rules, strict=True)}
    return cfg


def execute_backtest(
    config: BacktestConfig,
    *,
    run_id: str | None = None,
    settings: Settings | None = None,
    progress: Progress | None = None,
    data_progress: DataProgress | None = None,
    should_stop: ShouldStop | None = None,
) -> RunResults:
    """Validate, load, simulate and return the results."""
    start_time = now_iso()
    prepared = prepare_backtest(config, settings=settings, data_progress=data_progress)
    result = run_prepared(prepared, progress=progress, should_stop=should_stop)
    return from_backtest(
        result,
        run_id=run_id or uuid.uuid4().hex,
        config=document_config(prepared),
        start_time=start_time,
        end_time=now_iso(),
    )


def validate_backtest(config: BacktestConfig, *, settings: Settings | None = None) -> None:
    """Fail fast on what a request can get wrong, before a run is accepted.

    Checks the strategy and its parameters, the timeframe, the dates, the run's size, the exchange id and the
    symbols. An
    exchange that cannot be reached right now is not an error here: the run may still use stored candles.
    """
    settings = settings or get_settings()
    strategy_cls = load_registry(settings).get(config.strategy_class or config.strategy_name)
    with strategy_errors(strategy_cls):
        strategy_cls(config.strategy_params)
    tf = parse_timeframe(config.timeframe)
    start, end = resolve_range(config, tf, settings)
    check_run_size(config, tf, start, end, settings)
    service.check_symbols(config.exchange, config.symbols, settings=settings)
