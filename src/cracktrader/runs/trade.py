"""Paper sessions from a `/run/live` request: the typed `exchange_config.paper` settings, the strategy and the feed.

The CLI's `trade` uses it today; the server's sessions will use the same preparation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cracktrader.brokers.paper import PaperSession
from cracktrader.brokers.risk import RiskGate, parse_risk_limits
from cracktrader.clock import Clock
from cracktrader.data import service
from cracktrader.data.feeds.base import BarBatch, CandleFeed, market_batches
from cracktrader.data.feeds.ccxt_feed import CcxtFeed
from cracktrader.data.feeds.quotes import CcxtQuoteFeed, QuotedFeed, QuoteFeed, SyntheticQuoteFeed
from cracktrader.data.feeds.replay import ReplayFeed
from cracktrader.data.feeds.synthetic import SyntheticFeed
from cracktrader.data.sources.synthetic import parse_symbol
from cracktrader.data.timeframes import Timeframe, parse_timeframe
from cracktrader.engine.broker import SimSettings
from cracktrader.engine.strategy import Strategy
from cracktrader.engine.window import window_length
from cracktrader.errors import UserInputError
from cracktrader.exchanges.markets import market_rules
from cracktrader.runs.backtest import RunTooLargeError, prepare_backtest, resolve_range
from cracktrader.runs.config import BacktestConfig, LiveConfig, RunDate
from cracktrader.runs.strategy_errors import strategy_errors
from cracktrader.settings import Settings, get_settings
from cracktrader.strategies.registry import load_registry

DEFAULT_BALANCE = 10_000.0
# As a backtest's initial_cash: positive, finite, and small enough that cash arithmetic stays exact to the cent.
Balance = Annotated[float, Field(gt=0, le=1e15, strict=True, allow_inf_nan=False)]


class ReplayConfig(BaseModel):
    """Stored candles played through the live runtime instead of live ones."""

    model_config = ConfigDict(extra="forbid")

    start: RunDate = Field(..., description="First bar (ISO 8601)")
    end: RunDate = Field(..., description="End, exclusive (ISO 8601)")
    speed: float = Field(
        1000.0, gt=0, le=1e9, strict=True, allow_inf_nan=False, description="Bars' time divided by this"
    )


class PaperConfig(BaseModel):
    """`exchange_config.paper`: how a paper session simulates the exchange.

    Strict types: a string is not a number or a boolean here, because the stored record (which a resumed session
    is rebuilt from) keeps only values of the right type (runs/sanitize.py).
    """

    model_config = ConfigDict(extra="forbid")

    balances: dict[Annotated[str, Field(min_length=1, max_length=16)], Balance] = Field(
        default_factory=dict,
        max_length=50,
        description="Starting balances by currency; default 10,000 of the quote currency",
    )
    fill_model: Literal["bar", "quote"] = Field(
        "bar", description="bar: the backtest's rules (next bar's open); quote: the exchange's best bid and ask"
    )
    slippage_bps: float = Field(0.0, ge=0, le=10_000, strict=True, allow_inf_nan=False)
    latency_ms: int = Field(
        200,
        ge=0,
        le=60_000,
        strict=True,
        description="quote fill model: an order sees the first quote at or after this long",
    )
    replay: ReplayConfig | None = None
    exchange_rules: bool = Field(
        True,
        strict=True,
        description="The exchange's fees, amount and price precision, minimums; funds held by open orders",
    )


class PaperConfigError(UserInputError):
    """`exchange_config.paper` is not valid."""

    code = "INVALID_PAPER_CONFIG"
    status_code = 422


class NotAvailableYetError(UserInputError):
    """A paper setting that is specified but not built yet."""

    code = "NOT_IMPLEMENTED"
    status_code = 501


def paper_config(exchange_config: dict[str, Any]) -> PaperConfig:
    """The typed paper settings of a request; errors name the field and what is accepted."""
    raw = exchange_config.get("paper")
    if raw is not None and not isinstance(raw, dict):
        raise PaperConfigError(
            f"exchange_config.paper must be an object, got {type(raw).__name__}; accepted keys: "
            f"{', '.join(PaperConfig.model_fields)}",
            details={"accepted": list(PaperConfig.model_fields)},
        )
    try:
        return PaperConfig.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'paper'}: {e['msg']}" for e in exc.errors())
        raise PaperConfigError(
            f"Invalid exchange_config.paper: {problems}. Accepted: {', '.join(PaperConfig.model_fields)}",
            details={"accepted": list(PaperConfig.model_fields)},
        ) from None


@dataclass(slots=True)
class PaperPlan:
    """A session ready to run: the session, its feed, and the history it warms up on."""

    session: PaperSession
    feed: CandleFeed
    history: list[BarBatch]
    timeframe: Timeframe
    quote: str
    replay: bool


def prepare_paper(
    config: LiveConfig, *, clock: Clock, settings: Settings | None = None, strategy_cls: type[Strategy] | None = None
) -> PaperPlan:
    """Validate a paper request and build its session and feed (replayed candles, synthetic or exchange candles live).

    `strategy_cls` runs that class instead of the registry's (a resumed session's pinned code).

    Blocking: an exchange's warm-up window is read from the store and REST; the server calls it in a thread.
    """
    settings = settings or get_settings()
    if config.mode != "paper":
        raise NotAvailableYetError("Live trading with real orders comes with the exchange brokers; use mode paper")
    paper = paper_config(config.exchange_config)
    limits = parse_risk_limits(config.exchange_config)
    if paper.fill_model == "quote" and paper.replay is not None:
        raise PaperConfigError(
            "A replay has no live quotes: use fill_model bar with replay, or drop replay for quotes",
            details={"fill_model": "quote", "replay": True},
        )
    tf = parse_timeframe(config.timeframe)
    quote = _quote(config.symbols)
    cash = _starting_cash(paper.balances, quote)
    symbols = tuple(config.symbols)
    if paper.replay is not None:
        backtest = BacktestConfig(
            strategy_name=config.strategy_name,
            strategy_params=config.strategy_params,
            strategy_class=config.strategy_class,
            symbols=config.symbols,
            timeframe=config.timeframe,
            start_date=paper.replay.start,
            end_date=paper.replay.end,
            initial_cash=cash,
            exchange=config.exchange,
            slippage_bps=paper.slippage_bps,
            exchange_rules=paper.exchange_rules,
        )
        _check_replay_size(backtest, tf, settings)
        prepared = prepare_backtest(backtest, settings=settings, strategy_cls=strategy_cls)
        data = prepared.data
        batches = market_batches(symbols, data.timestamp, (data.open, data.high, data.low, data.close, data.volume),
                                 data.tradable)  # fmt: skip
        session = PaperSession(prepared.strategy, symbols, prepared.sim, tf.periods_per_year)
        # A replay's risk limits live in the replayed time (a UTC day, a second of orders): the bar's close.
        session.risk = RiskGate(limits, lambda: (session.last_timestamp or 0) + tf.ms)
        replayed = ReplayFeed(batches, tf, clock, speed=paper.replay.speed)
        return PaperPlan(session, replayed, [], tf, quote, replay=True)
    exchange = config.exchange.strip().lower()
    live: SyntheticFeed | CcxtFeed
    if exchange == service.SYNTHETIC:
        live = SyntheticFeed(symbols, tf, clock)
    else:
        # Public market data only: the feed's client gets no credentials, so paper never signs a request.
        live = CcxtFeed(exchange, symbols, tf, clock, settings=settings)  # an unknown exchange id fails here
    cls = strategy_cls or load_registry(settings).get(config.strategy_class or config.strategy_name)
    with strategy_errors(cls):
        strategy = cls(config.strategy_params)
    fees = service.exchange_fee_rates(config.exchange, config.symbols[0], settings)
    maker, taker = fees if fees is not None else (settings.default_fee_rate, settings.default_fee_rate)
    rules = market_rules(exchange, symbols, settings=settings) if paper.exchange_rules else None
    if rules is not None:
        maker, taker = rules[0].maker_fee, rules[0].taker_fee
    sim = SimSettings(
        initial_cash=cash, maker_fee=maker, taker_fee=taker, slippage=paper.slippage_bps / 10_000, rules=rules
    )
    session = PaperSession(
        strategy, symbols, sim, tf.periods_per_year, risk=RiskGate(limits, clock.now_ms), timeframe_ms=tf.ms
    )
    history = live.history(window_length(strategy))
    feed: CandleFeed = live
    if paper.fill_model == "quote":
        session.use_quotes(paper.latency_ms, clock.now_ms)
        quotes: QuoteFeed = (
            SyntheticQuoteFeed(symbols, tf, clock)
            if exchange == service.SYNTHETIC
            else CcxtQuoteFeed(exchange, symbols, clock, settings=settings)
        )
        feed = QuotedFeed(live, quotes, session.on_quote)
    return PaperPlan(session, feed, history, tf, quote, replay=False)


def _check_replay_size(config: BacktestConfig, tf: Timeframe, settings: Settings) -> None:
    """Refuse a replay over CRACKTRADER_MAX_REPLAY_BARS before it loads anything (it loads in this process)."""
    start, end = resolve_range(config, tf, settings)
    bars = tf.count(start, end)
    total = bars * len(config.symbols)
    if total > settings.max_replay_bars:
        raise RunTooLargeError(
            f"The replay is {bars:,} {tf} bars x {len(config.symbols)} symbols = {total:,} bars, more than this "
            f"server's limit of {settings.max_replay_bars:,} for a replay (CRACKTRADER_MAX_REPLAY_BARS): shorten "
            "the range, use a longer timeframe or fewer symbols, or run it as a backtest",
            details={
                "bars_per_symbol": bars,
                "symbols": len(config.symbols),
                "total_bars": total,
                "max_total_bars": settings.max_replay_bars,
            },
        )


def _quote(symbols: list[str]) -> str:
    quotes = {parse_symbol(s)[1] for s in symbols}
    if len(quotes) != 1:
        raise UserInputError(
            f"A paper session trades symbols of one quote currency; got {sorted(quotes)} ({', '.join(symbols)})"
        )
    return quotes.pop()


def _starting_cash(balances: dict[str, float], quote: str) -> float:
    if not balances:
        return DEFAULT_BALANCE
    other = sorted(set(balances) - {quote})
    if other:
        raise PaperConfigError(
            f"Starting balances other than the quote currency {quote} are not supported yet: {other}",
            details={"quote": quote, "unsupported": other},
        )
    cash = balances.get(quote, 0.0)
    if not cash > 0:
        raise PaperConfigError(f"The {quote} balance must be positive, got {cash!r}", details={"quote": quote})
    return float(cash)
