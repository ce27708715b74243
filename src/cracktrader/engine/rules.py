"""Exchange rules (`exchange_rules`): fees, amount and price precision, minimums; one implementation for all.

The event simulator applies them in backtests and paper sessions alike; rounding is ccxt's own
`decimal_to_precision` in the market's precision mode, so a simulated order is what the exchange would accept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cracktrader.engine.records import REASON_BELOW_MIN_AMOUNT, REASON_BELOW_MIN_NOTIONAL
from cracktrader.errors import UserInputError

# ccxt's precision modes (ccxt.base.decimal_to_precision): precision is a number of decimals, of significant
# digits, or the step itself.
DECIMAL_PLACES = 2
SIGNIFICANT_DIGITS = 3
TICK_SIZE = 4
PRECISION_MODES = (DECIMAL_PLACES, SIGNIFICANT_DIGITS, TICK_SIZE)


@dataclass(frozen=True, slots=True)
class MarketRules:
    """One market's trading rules, as ccxt describes it (None: the exchange sets no such rule)."""

    maker_fee: float
    taker_fee: float
    amount_precision: float | None = None
    price_precision: float | None = None
    precision_mode: int = TICK_SIZE
    min_amount: float | None = None
    min_notional: float | None = None

    def __post_init__(self) -> None:
        if self.precision_mode not in PRECISION_MODES:
            raise UserInputError(f"Unknown ccxt precision mode {self.precision_mode!r}")
        for name in ("maker_fee", "taker_fee"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and 0 <= value < 1):
                raise UserInputError(f"{name} must be a rate in [0, 1), got {value!r}")
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """The rules as a results document records them."""
        return {
            "maker_fee": self.maker_fee,
            "taker_fee": self.taker_fee,
            "amount_precision": self.amount_precision,
            "price_precision": self.price_precision,
            "precision_mode": self.precision_mode,
            "min_amount": self.min_amount,
            "min_notional": self.min_notional,
        }


@lru_cache(maxsize=1)
def _ccxt_precision() -> Any:
    """ccxt's rounding module, imported on first use (importing ccxt costs ~0.3 s that rule-less runs skip)."""
    from ccxt.base import decimal_to_precision

    return decimal_to_precision


def _to_precision(value: float, precision: float | None, mode: int, *, truncate: bool) -> float:
    if precision is None or not math.isfinite(value):
        return value
    d = _ccxt_precision()
    text = d.decimal_to_precision(
        value, d.TRUNCATE if truncate else d.ROUND, precision, mode, d.NO_PADDING
    )  # fmt: skip
    return float(text)


def amount_to_precision(rules: MarketRules, amount: float) -> float:
    """The amount the exchange would take: truncated to the market's amount precision (never rounded up)."""
    return _to_precision(amount, rules.amount_precision, rules.precision_mode, truncate=True)


def price_to_precision(rules: MarketRules, price: float) -> float:
    """A price on the market's price grid (rounded to the nearest step, as ccxt's price_to_precision does)."""
    return _to_precision(price, rules.price_precision, rules.precision_mode, truncate=False)


def minimum_refusal(rules: MarketRules, amount: float, price: float) -> int | None:
    """Why the exchange would refuse an order of `amount` at `price` (a records.REASON_* code), else None."""
    if amount <= 0 or (rules.min_amount is not None and amount < rules.min_amount):
        return REASON_BELOW_MIN_AMOUNT
    if rules.min_notional is not None and price == price and amount * price < rules.min_notional:
        return REASON_BELOW_MIN_NOTIONAL
    return None
