"""Market specs of the offline `synthetic` exchange: realistic precision, limits and fees for any BASE/QUOTE.

The price step is the generator's own rounding (about a millionth of the price), the amount step is worth at most a
US dollar, the minimum order is 5 USD, as on Binance spot; fees are Binance's base rate.
"""

from __future__ import annotations

import math
from typing import Any

from cracktrader.data.sources.synthetic import asset_usd, parse_symbol, price_decimals

MAKER_FEE = 0.001
TAKER_FEE = 0.001
MIN_NOTIONAL_USD = 5.0
AMOUNT_STEP_USD = 1.0


def synthetic_market(symbol: str) -> dict[str, Any]:
    """The market `symbol` in ccxt's unified shape (precision mode TICK_SIZE)."""
    base, quote = parse_symbol(symbol)
    price_step = 10.0 ** -price_decimals(symbol)
    base_usd = asset_usd(base)
    amount_step = 10.0 ** min(0, math.floor(math.log10(AMOUNT_STEP_USD / base_usd)))
    return {
        "id": f"{base}{quote}",
        "symbol": f"{base}/{quote}",
        "base": base,
        "quote": quote,
        "type": "spot",
        "spot": True,
        "active": True,
        "maker": MAKER_FEE,
        "taker": TAKER_FEE,
        "precision": {"amount": amount_step, "price": price_step},
        "limits": {
            "amount": {"min": amount_step, "max": None},
            "price": {"min": price_step, "max": None},
            "cost": {"min": round(MIN_NOTIONAL_USD / asset_usd(quote), 8), "max": None},
        },
    }
