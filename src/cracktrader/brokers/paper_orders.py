"""A paper session's orders in the one order model (`brokers.orders`): the simulator's book, read into the ledger.

The matching engine keeps working orders and final order rows; after each bar `PaperOrders.sync` moves every
order it has not seen through the ledger's state machine (`pending_new -> submitted -> open -> filled |
canceled | rejected`) and returns the changes, in order, for the `orders` channel. Live trading feeds the same
ledger from the venue, so both publish the same events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cracktrader.brokers.orders import ManagedOrder, OrderEvent, OrderLedger, OrderStatus, TradeFill
from cracktrader.engine.broker import Order
from cracktrader.engine.context import OrderKind
from cracktrader.engine.fills import BUY
from cracktrader.engine.records import (
    O_BAR,
    O_CREATED,
    O_FEE,
    O_ID,
    O_PRICE,
    O_QTY,
    O_REASON,
    O_SIDE,
    O_STATUS,
    O_SYMBOL,
    O_TRIGGER,
    O_TYPE,
    REASON_NAMES,
    STATUS_CANCELED,
    STATUS_FILLED,
    TYPE_MARKET,
    TYPE_NAMES,
    TYPE_STOP,
    TYPE_STOP_LIMIT,
)

PAPER_EXCHANGE = "paper"  # the venue name of simulated fills (their key: exchange, symbol, trade id)


@dataclass(frozen=True, slots=True)
class _Spec:
    """What the ledger needs of a simulator order."""

    order_id: int
    symbol: int
    side: int
    type: int
    size: float
    trigger: float  # limit price (limit, stop-limit) or stop price (stop); NaN for market
    stop: float


class PaperOrders:
    """Reads a simulator's orders into an `OrderLedger`, once each, and reports every change."""

    def __init__(self, symbols: Sequence[str], *, quote: str = "") -> None:
        self.symbols = tuple(symbols)
        self.quote = quote
        self.ledger = OrderLedger()
        self._rows_seen = 0

    def sync(
        self, open_orders: Sequence[Order], rows: Sequence[Sequence[float]], timestamps: np.ndarray
    ) -> list[OrderEvent]:
        """The changes since the last call: final outcomes in the book's order, then new working orders.

        `timestamps` are the bar open times (ms) the rows' bar indices refer to.
        """
        events: list[OrderEvent] = []
        new_rows = rows[self._rows_seen :]
        self._rows_seen = len(rows)
        # Rows first: a bar's fills come at its open, before the strategy decides (and cancels, and orders anew).
        for row in new_rows:
            events += self._finish(row, timestamps)
        for o in open_orders:
            key = str(o.id)
            if key not in self.ledger and o.size is not None and o.size > 0:
                spec = _Spec(o.id, o.symbol, o.side, o.type, o.size, o.trigger, o.stop)
                events += self._open(spec, int(timestamps[o.created]))
        return events

    def _open(self, spec: _Spec, at: int) -> list[OrderEvent]:
        """Register, send and (resting types) acknowledge an order; the simulator accepted it at `at`."""
        kind: OrderKind = TYPE_NAMES[spec.type]
        price = spec.trigger if spec.type not in (TYPE_MARKET, TYPE_STOP) else None
        stop = spec.stop if spec.type in (TYPE_STOP, TYPE_STOP_LIMIT) else None
        key = str(spec.order_id)
        order = ManagedOrder(
            client_order_id=key,
            exchange=PAPER_EXCHANGE,
            symbol=self.symbols[spec.symbol],
            side="buy" if spec.side == BUY else "sell",
            type=kind,
            amount=spec.size,
            created_at=at,
            price=price,
            stop=stop,
        )
        events = [self.ledger.add(order), self.ledger.submit(key, at)]
        if spec.type != TYPE_MARKET:  # a market order fills at the next open; a resting one is open until then
            events.append(self.ledger.acknowledge(key, key, at))
        return events

    def _finish(self, row: Sequence[float], timestamps: np.ndarray) -> list[OrderEvent]:
        """Apply one final order row: its fill, cancel or rejection."""
        key = str(int(row[O_ID]))
        at = int(timestamps[int(row[O_BAR])])
        status, qty, reason = int(row[O_STATUS]), float(row[O_QTY]), REASON_NAMES[int(row[O_REASON])]
        events: list[OrderEvent] = []
        if key not in self.ledger:
            size = qty if qty > 0 else 0.0
            if size == 0.0:  # never working and no amount (refused before it had one): reported, not booked
                return [_unbooked(row, self.symbols, at, reason)]
            spec = _Spec(
                int(row[O_ID]),
                int(row[O_SYMBOL]),
                int(row[O_SIDE]),
                int(row[O_TYPE]),
                size,
                row[O_TRIGGER],
                row[O_TRIGGER],
            )
            events += self._open(spec, int(timestamps[int(row[O_CREATED])]))
        if status == STATUS_FILLED:
            fill = TradeFill(
                exchange=PAPER_EXCHANGE,
                symbol=self.symbols[int(row[O_SYMBOL])],
                trade_id=key,
                qty=qty,
                price=float(row[O_PRICE]),
                timestamp=at,
                client_order_id=key,
                exchange_order_id=key,
                fee=float(row[O_FEE]),
                fee_currency=self.quote or None,
            )
            event = self.ledger.apply_fill(fill)
            if event is not None:
                events.append(event)
            if self.ledger.get(key).is_working:  # filled less than asked (cash, precision): the rest goes
                events.append(self.ledger.cancel(key, at, "unfilled remainder canceled"))
        elif status == STATUS_CANCELED:
            events.append(self.ledger.cancel(key, at, reason))
        else:
            events.append(self.ledger.reject(key, at, reason))
        return events


def _unbooked(row: Sequence[float], symbols: tuple[str, ...], at: int, reason: str) -> OrderEvent:
    """The event of an order refused before it had an amount (an all-in order without the cash for any)."""
    kind: OrderKind = TYPE_NAMES[int(row[O_TYPE])]
    trigger = float(row[O_TRIGGER])
    return OrderEvent(
        order_id=str(int(row[O_ID])),
        status=OrderStatus.CANCELED if int(row[O_STATUS]) == STATUS_CANCELED else OrderStatus.REJECTED,
        symbol=symbols[int(row[O_SYMBOL])],
        side="buy" if row[O_SIDE] > 0 else "sell",
        type=kind,
        amount=0.0,
        price=trigger if trigger == trigger else None,
        timestamp=at,
        filled=0.0,
        average_price=None,
        exchange_order_id=None,
        reason=reason,
    )
