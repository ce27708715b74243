"""Fill accounting: the one rule for cash, position, fees, cost basis and realised pnl.

The compiled kernel, the event simulator and the paper broker all call `apply_fill`; none keeps a copy.
A book is a (symbols, >= 3) float array whose first columns are position, entry price and entry cost.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from cracktrader.engine.records import (
    REASON_INSUFFICIENT_CASH,
    REASON_INSUFFICIENT_POSITION,
    REASON_NO_POSITION,
    REASON_ZERO_SIZE,
)

B_POS = 0
B_ENTRY_PRICE = 1  # volume-weighted average entry price of the open position
B_ENTRY_COST = 2  # cash paid for a long incl. fees, or net credit received for a short
N_BOOK = 3

# A reducing fill within this fraction of the position closes it exactly (float residue of partial sizes).
CLOSE_TOLERANCE = 1e-9


@njit(cache=True, nogil=True)
def apply_fill(
    book: np.ndarray, j: int, cash: float, side: int, qty: float, price: float, fee_rate: float
) -> tuple[float, float, float, float, float, float]:
    """Apply a fill of `qty` at `price` to symbol j's row of `book`.

    Returns (cash, qty, fee, pnl, return, opened): qty as booked (snapped to the position when it closes it),
    pnl and return of the part that closed a position (NaN when nothing closed), and the quantity that opened
    or added to a position. The caller has already refused fills that spot cash or position cannot cover.
    """
    row = book[j]
    p = row[B_POS]
    reduces = p != 0.0 and (p > 0.0) == (side < 0)
    if reduces and abs(qty - abs(p)) <= CLOSE_TOLERANCE * abs(p):
        qty = abs(p)
    notional = qty * price
    fee = notional * fee_rate
    closing = min(qty, abs(p)) if reduces else 0.0
    pnl = math.nan
    ret = math.nan
    if closing > 0.0:
        share = closing / abs(p)
        basis = row[B_ENTRY_COST] * share
        fee_part = fee * closing / qty
        if p > 0.0:
            pnl = closing * price - fee_part - basis
            ret = pnl / basis
        else:
            pnl = basis - closing * price - fee_part
            ret = pnl / (closing * row[B_ENTRY_PRICE])
        row[B_ENTRY_COST] -= basis
    opening = qty - closing
    left = abs(p) - closing
    if opening > 0.0:
        fee_part = fee * opening / qty
        row[B_ENTRY_PRICE] = (row[B_ENTRY_PRICE] * left + price * opening) / (left + opening)
        row[B_ENTRY_COST] += opening * price + fee_part if side > 0 else opening * price - fee_part
    if side > 0:
        cost = notional + fee
        cash -= cost
        if -CLOSE_TOLERANCE * cost < cash < 0.0:
            cash = 0.0  # float residue of an exact all-in buy
    else:
        cash += notional - fee
    if closing > 0.0 and opening == 0.0 and left == 0.0:
        row[B_POS] = 0.0
    else:
        row[B_POS] = p + side * qty
    if row[B_POS] == 0.0:
        row[B_ENTRY_PRICE] = 0.0
        row[B_ENTRY_COST] = 0.0
    return cash, qty, fee, pnl, ret, opening


def spot_refusal(
    *,
    side: int,
    position: float,
    qty: float,
    price: float,
    fee_rate: float,
    cash: float,
    allow_short: bool,
    asked_zero: bool = False,
) -> int | None:
    """Why a fill must be refused (spot cash and position never go negative), as a records.REASON_* code."""
    if qty <= 0:
        if side < 0:
            return REASON_NO_POSITION
        return REASON_ZERO_SIZE if asked_zero else REASON_INSUFFICIENT_CASH
    if side < 0 and not allow_short and qty > position * (1 + CLOSE_TOLERANCE):
        return REASON_NO_POSITION if position <= 0 else REASON_INSUFFICIENT_POSITION
    if side > 0 and position >= 0 and qty * price * (1 + fee_rate) > cash * (1 + CLOSE_TOLERANCE):
        return REASON_INSUFFICIENT_CASH
    return None
