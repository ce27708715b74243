"""Each market's trading rules for the simulator, from ccxt's markets (or the synthetic exchange's specs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cracktrader.data import service
from cracktrader.engine.rules import TICK_SIZE, MarketRules
from cracktrader.errors import InvalidSymbolError
from cracktrader.exchanges.synthetic import synthetic_market
from cracktrader.settings import Settings, get_settings


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number == number and number > 0 else None


def rules_from_market(
    market: Mapping[str, Any],
    precision_mode: int,
    *,
    default_fee: float,
    fees: tuple[float, float] | None = None,
) -> MarketRules:
    """A ccxt unified market as rules; `fees` (maker, taker) override the market's, which override the default."""
    precision = market.get("precision") or {}
    limits = market.get("limits") or {}
    if fees is None:
        maker, taker = market.get("maker"), market.get("taker")
        fees = (
            (float(maker), float(taker))
            if isinstance(maker, int | float) and isinstance(taker, int | float)
            else (default_fee, default_fee)
        )
    return MarketRules(
        maker_fee=fees[0],
        taker_fee=fees[1],
        amount_precision=_number(precision.get("amount")),
        price_precision=_number(precision.get("price")),
        precision_mode=int(precision_mode),
        min_amount=_number((limits.get("amount") or {}).get("min")),
        min_notional=_number((limits.get("cost") or {}).get("min")),
    )


def market_rules(
    exchange_id: str,
    symbols: list[str] | tuple[str, ...],
    *,
    settings: Settings | None = None,
    fees: tuple[float, float] | None = None,
) -> tuple[MarketRules, ...]:
    """The rules of `symbols` on `exchange_id`, in order; ccxt exchanges load their markets (public REST, retried).

    `fees` (a run's `commission`) replace every market's fee rates.
    """
    settings = settings or get_settings()
    exchange = exchange_id.strip().lower()
    default = settings.default_fee_rate
    if exchange == service.SYNTHETIC:
        return tuple(rules_from_market(synthetic_market(s), TICK_SIZE, default_fee=default, fees=fees) for s in symbols)
    from cracktrader.data.feeds.ccxt_feed import public_settings
    from cracktrader.data.sources.ccxt_source import CcxtSource

    # Market specs are public data: no credentials, so a paper session never signs a request.
    with CcxtSource(exchange, public_settings(settings, exchange)) as source:
        markets = source._load_markets()
        mode = int(source.exchange.precisionMode)
        out = []
        for symbol in symbols:
            market = markets.get(symbol)
            if market is None:
                source.validate_symbol(symbol)  # raises with suggestions
                raise InvalidSymbolError(f"Symbol {symbol} is not a market on {exchange}", details={"symbol": symbol})
            out.append(rules_from_market(market, mode, default_fee=default, fees=fees))
    return tuple(out)
