"""The fee a venue charged for a trade, as a positive cost, whichever of ccxt's paths (REST or WebSocket) parsed it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def paid_fee(exchange_id: str, trade: Mapping[str, Any]) -> float:
    """The fee cost of a ccxt unified trade, positive when paid (negative only for a rebate).

    OKX signs fees negative when charged. ccxt's REST `parse_trade` negates them, but ccxt.pro's okx builds a
    WebSocket trade from the `orders` push (`order_to_trade`, its `info` is the order: `accFillSz` is there) and
    copies `fillFee` as it is, so that path's cost is turned round here.
    """
    fee = trade.get("fee") or {}
    cost = float(fee.get("cost") or 0)
    info = trade.get("info") or {}
    if exchange_id == "okx" and isinstance(info, Mapping) and "accFillSz" in info and "fillFee" in info:
        return -cost
    return cost
