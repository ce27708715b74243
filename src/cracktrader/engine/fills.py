"""Fill-price and sizing rules shared by the compiled kernel and the event-driven broker.

Both simulators call these functions so that the two paths cannot drift apart.
"""

from __future__ import annotations

import math

from numba import njit

BUY = 1
SELL = -1


@njit(cache=True, nogil=True)
def market_fill_price(side: int, open_: float, slippage: float) -> float:
    """A market order fills at the bar's open, moved against the trader by the slippage fraction."""
    return open_ * (1.0 + slippage) if side == BUY else open_ * (1.0 - slippage)


@njit(cache=True, nogil=True)
def stop_fill_price(side: int, open_: float, high: float, low: float, stop: float, slippage: float) -> float:
    """Fill price of a stop-market order in this bar, or NaN when it does not trigger.

    A gap through the stop fills at the open, which is worse than the stop, as on a real exchange.
    """
    if side == BUY:
        if open_ >= stop:
            return open_ * (1.0 + slippage)
        if high >= stop:
            return stop * (1.0 + slippage)
        return math.nan
    if open_ <= stop:
        return open_ * (1.0 - slippage)
    if low <= stop:
        return stop * (1.0 - slippage)
    return math.nan


@njit(cache=True, nogil=True)
def limit_fill_price(side: int, open_: float, high: float, low: float, limit: float) -> float:
    """Fill price of a limit order in this bar, or NaN when the price never reaches the limit."""
    if side == BUY:
        if open_ <= limit:
            return open_
        if low <= limit:
            return limit
        return math.nan
    if open_ >= limit:
        return open_
    if high >= limit:
        return limit
    return math.nan


@njit(cache=True, nogil=True)
def limit_is_taker(side: int, open_: float, limit: float) -> bool:
    """A limit order already marketable at the open takes liquidity and pays the taker rate."""
    return open_ <= limit if side == BUY else open_ >= limit


@njit(cache=True, nogil=True)
def all_in_quantity(cash: float, price: float, fee_rate: float) -> float:
    """The largest quantity that cash buys including the fee: cash / (price * (1 + fee))."""
    if cash <= 0.0 or price <= 0.0:
        return 0.0
    return cash / (price * (1.0 + fee_rate))
