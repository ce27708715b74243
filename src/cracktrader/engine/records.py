"""Column layout and codes of the order records both simulators write."""

from __future__ import annotations

from typing import Final

# Order record columns (float64 rows); every simulated order, filled or rejected, is one row.
O_ID: Final = 0
O_CREATED: Final = 1  # bar index of the decision
O_BAR: Final = 2  # bar index of the fill or rejection
O_SYMBOL: Final = 3
O_SIDE: Final = 4  # +1 buy, -1 sell
O_TYPE: Final = 5
O_STATUS: Final = 6
O_QTY: Final = 7
O_PRICE: Final = 8
O_FEE: Final = 9
O_PNL: Final = 10  # realised pnl net of entry and exit fees; NaN on opening fills
O_RETURN: Final = 11  # pnl / entry cost; NaN on opening fills
O_REASON: Final = 12
O_TRIGGER: Final = 13  # limit or stop price; NaN for market orders
N_COLS: Final = 14

TYPE_MARKET: Final = 0
TYPE_LIMIT: Final = 1
TYPE_STOP: Final = 2
TYPE_STOP_LIMIT: Final = 3
TYPE_NAMES: Final = ("market", "limit", "stop", "stop_limit")

STATUS_OPEN: Final = 0
STATUS_FILLED: Final = 1
STATUS_REJECTED: Final = 2
STATUS_CANCELED: Final = 3
STATUS_NAMES: Final = ("open", "filled", "rejected", "canceled")

REASON_SIGNAL: Final = 0
REASON_STOP_LOSS: Final = 1
REASON_TAKE_PROFIT: Final = 2
REASON_INSUFFICIENT_CASH: Final = 3
REASON_NO_POSITION: Final = 4
REASON_INSUFFICIENT_POSITION: Final = 5
REASON_SHORTING_DISABLED: Final = 6
REASON_CANCELED_BY_STRATEGY: Final = 7
REASON_OCO: Final = 8
REASON_ZERO_SIZE: Final = 9
REASON_RISK_LIMIT: Final = 10  # refused by a session's risk limits (paper and live)
# Exchange rules (`exchange_rules`): refused locally, as the exchange would refuse the order.
REASON_BELOW_MIN_AMOUNT: Final = 11
REASON_BELOW_MIN_NOTIONAL: Final = 12
REASON_FUNDS_LOCKED: Final = 13  # the balance is there, but open orders hold it
REASON_NAMES: Final = (
    "signal",
    "stop_loss",
    "take_profit",
    "insufficient cash",
    "no position to sell",
    "sell size exceeds position",
    "shorting is disabled",
    "canceled by strategy",
    "other side of a stop-loss/take-profit pair filled",
    "order size is zero",
    "refused by a risk limit",
    "amount below the market's minimum",
    "notional below the market's minimum",
    "balance held by open orders",
)
