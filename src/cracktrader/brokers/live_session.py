"""A live session: the paper session's window, decisions and risk gate, with orders sent to the venue.

The strategy sees the same `Context` as in a backtest or paper session. Its orders become `OrderIntent`s that the
runtime sends through `LiveOrders` after the bar; the venue's fills are booked into the session's simulator book
(`book_venue_fill`, the one fill accounting), so cash, positions, equity, the results document and the stored rows
are the paper session's, fed by real executions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from cracktrader.brokers.live import LiveOrders, OrderIntent
from cracktrader.brokers.orders import ManagedOrder, OrderEvent, OrderStatus, TradeFill, exact
from cracktrader.brokers.paper import PaperSession, _GatedContext
from cracktrader.brokers.risk import RiskGate
from cracktrader.data.feeds.base import ClosedCandle
from cracktrader.engine.broker import BarContext, SimSettings
from cracktrader.engine.context import OrderState, OrderUpdate, OrderView
from cracktrader.engine.fills import BUY, SELL, all_in_quantity
from cracktrader.engine.records import (
    REASON_RISK_LIMIT,
    REASON_SIGNAL,
    REASON_STOP_LOSS,
    REASON_TAKE_PROFIT,
    TYPE_LIMIT,
    TYPE_MARKET,
)
from cracktrader.engine.strategy import Strategy
from cracktrader.engine.window import WindowContext
from cracktrader.exchanges.client_ids import ClientIdError, parse_client_id

log = logging.getLogger(__name__)

_REASONS = {"signal": REASON_SIGNAL, "stop_loss": REASON_STOP_LOSS, "take_profit": REASON_TAKE_PROFIT}
# How an order's change reads to a strategy's `on_order` (fills reach it as `on_fill`).
_STRATEGY_STATES: dict[OrderStatus, OrderState] = {
    OrderStatus.OPEN: "accepted",
    OrderStatus.CANCELED: "cancelled",
    OrderStatus.EXPIRED: "cancelled",
    OrderStatus.REJECTED: "rejected",
    OrderStatus.REJECTED_UNCONFIRMED: "rejected",
}


class LiveSession(PaperSession):
    """Closed candles in, strategy decisions out as order intents; the portfolio is booked from venue fills."""

    def __init__(
        self,
        strategy: Strategy,
        symbols: tuple[str, ...],
        settings: SimSettings,
        periods_per_year: float,
        *,
        risk: RiskGate,
        timeframe_ms: int,
    ) -> None:
        super().__init__(strategy, symbols, settings, periods_per_year, risk=risk, timeframe_ms=timeframe_ms)
        self.orders: LiveOrders | None = None  # attached by the runtime once the venue is reachable
        self.outbox: list[OrderIntent] = []  # decided in this bar, to send after it
        self.cancels: list[str] = []  # client ids the strategy cancelled in this bar
        self.fills_booked = 0
        # The venue's trade id of each booked fill, by its row in the simulator: the stored fill's key (two
        # part-fills of one order share the order's number).
        self.venue_trade_ids: dict[int, str] = {}
        self.no_entries_reason: str | None = None  # set while new entries must not go out (balance drift, a ban)
        self._index = {s: j for j, s in enumerate(symbols)}

    # --- the Portfolio that LiveOrders books into ---------------------------------------------------------------

    @property
    def cash(self) -> float:
        """Quote currency of the allocated capital not spent."""
        return float(self.sim.cash)

    def position(self, symbol: str) -> float:
        """The session's holding of `symbol`."""
        return float(self.sim.pos[self._index[symbol]])

    def book(self, order: ManagedOrder, fill: TradeFill, intent: OrderIntent | None) -> None:
        """Book a venue fill into the simulator's book in the current bar.

        A fee in the base currency comes out of the quantity (a buy receives less, a sell gives more), the price
        adjusted so the quote side stays exact; a quote fee is charged as the accounting's fee; a fee in any other
        currency (a discount token) is left out of cash and counted by the order.
        """
        qty = float(exact(fill.qty, "qty"))
        price = float(exact(fill.price, "price"))
        fee = float(exact(fill.fee, "fee"))
        base, quote = order.symbol.split("/")[0], order.symbol.split("/")[-1]
        quote_fee = fee if (fill.fee_currency or quote) == quote else 0.0
        if fill.fee_currency == base and fee:
            net = qty - fee if order.side == "buy" else qty + fee
            price, qty = qty * price / net, net
        seq = _sequence(order, intent)
        kind = TYPE_LIMIT if order.type == "limit" else TYPE_MARKET
        reason = _REASONS.get(intent.intent if intent is not None else "signal", REASON_SIGNAL)
        t = max(0, self.bars - 1)
        self.sim.book_venue_fill(
            t, seq, self._index[order.symbol], BUY if order.side == "buy" else SELL, qty, price, quote_fee, kind,
            reason,
        )  # fmt: skip
        self.venue_trade_ids[len(self.sim.rows) - 1] = fill.trade_id
        self.fills_booked += 1

    # --- strategy callbacks and the bar --------------------------------------------------------------------------

    def order_changed(self, event: OrderEvent) -> None:
        """Tell an event strategy (`on_order`) how the venue took its order; fills arrive as `on_fill`."""
        state = _STRATEGY_STATES.get(event.status)
        if state is None or self.sim.events is None or self.orders is None:
            return
        order = self.orders.ledger.get(event.order_id)
        intent = self.orders.intents.get(event.order_id)
        self.sim.events.append(
            OrderUpdate(
                _sequence(order, intent), event.symbol, event.side, event.type, state, event.reason or "",
                event.timestamp,
            )
        )  # fmt: skip

    def on_bar(self, timestamp: int, candles: Mapping[str, ClosedCandle]) -> None:
        """The paper session's bar, then the exits the session's stop-loss and take-profit levels call for."""
        if self.orders is not None:
            for symbol, candle in candles.items():
                self.orders.last_prices[symbol] = candle.close
        super().on_bar(timestamp, candles)
        if self.orders is None:
            return
        for symbol, candle in candles.items():
            if any(i.symbol == symbol and i.side == "sell" for i in self.outbox):
                continue
            for intent in self.orders.bracket_exits(symbol, candle.low, candle.high):
                self.outbox.append(intent)

    def take_outbox(self) -> tuple[list[OrderIntent], list[str]]:
        """The intents and cancels decided since the last call, in the order they were made."""
        out, self.outbox = self.outbox, []
        cancels, self.cancels = self.cancels, []
        return out, cancels

    def _context(self) -> WindowContext:
        return LiveContext(self.ctx, self.strategy, self.window, self)

    def runtime_state(self) -> dict[str, Any] | None:
        return {"fills_booked": self.fills_booked}

    def restore_runtime_state(self, state: dict[str, Any] | None) -> None:
        self.fills_booked = int((state or {}).get("fills_booked", 0))


def _sequence(order: ManagedOrder, intent: OrderIntent | None) -> int:
    if intent is not None and intent.order_id is not None:
        return intent.order_id
    try:
        return parse_client_id(order.client_order_id).sequence
    except ClientIdError:
        return 0


class LiveContext(_GatedContext):
    """The live window: the gate first, then an order intent for the venue; the portfolio is the booked one."""

    def __init__(self, ctx: BarContext, strategy: Strategy, length: int, session: LiveSession) -> None:
        super().__init__(ctx, strategy, length, session)
        self._live = session

    @property
    def cash(self) -> float:
        orders = self._live.orders
        return self._ctx.cash if orders is None else orders.available_cash() - self._queued_cash()

    def _queued_cash(self) -> float:
        total = 0.0
        for i in self._live.outbox:
            if i.side == "buy":
                price = i.price if i.price is not None else self._ctx.price(i.symbol)
                total += i.amount * price
        return total

    def open_orders(self, symbol: str | None = None) -> list[OrderView]:
        name = None if symbol is None else self.symbols[self._ctx._j(symbol)]
        views: list[OrderView] = []
        orders = self._live.orders
        if orders is not None:
            for o in orders.ledger.open_orders(name):
                intent = orders.intents.get(o.client_order_id)
                remaining = float(exact(o.amount, "amount") - o.filled_qty)
                views.append(
                    OrderView(_sequence(o, intent), o.symbol, o.side, o.type, remaining, o.price, None,
                              intent.intent if intent is not None else "signal")
                )  # fmt: skip
        for i in self._live.outbox:
            if name is None or i.symbol == name:
                views.append(OrderView(i.order_id or 0, i.symbol, i.side, i.type, i.amount, i.price, None, i.intent))
        return views

    def _record(self, side: int, symbol: str | None, size: float | None, **kw: float | None) -> int:
        fraction = kw.get("fraction")
        if self._refused(side, symbol, size, kw.get("limit"), kw.get("stop"), 1.0 if fraction is None else fraction):
            return -1
        return self._intent(side, symbol, size, kw)

    def _intent(self, side: int, symbol: str | None, size: float | None, kw: Mapping[str, float | None]) -> int:
        session = self._live
        j = self._ctx._j(symbol)
        name = self.symbols[j]
        sim = session.sim
        limit, stop = kw.get("limit"), kw.get("stop")
        if stop is not None or (side == SELL and session.position(name) <= 0):
            # Stop entries are not sent (only the session's brackets are managed), and spot has no shorts.
            return sim.reject_now(self._ctx.i, j, side, size, REASON_RISK_LIMIT)
        if session.no_entries_reason is not None and side == BUY:
            return sim.reject_now(self._ctx.i, j, side, size, REASON_RISK_LIMIT)
        price = self._ctx.price(name) if limit is None else limit
        if size is not None:
            amount = size
        elif side == SELL:
            amount = session.position(name)
        else:
            rules = sim.s.rules[j] if sim.s.rules is not None else None
            rate = rules.taker_fee if rules is not None else sim.s.taker_fee
            fraction = kw.get("fraction")
            amount = all_in_quantity(self.cash * (1.0 if fraction is None else fraction), price, rate)
        if not (math.isfinite(amount) and amount > 0):
            return sim.reject_now(self._ctx.i, j, side, size, REASON_RISK_LIMIT)
        order_id = sim.take_id()
        session.outbox.append(
            OrderIntent(
                name,
                "buy" if side == BUY else "sell",
                "limit" if limit is not None else "market",
                amount,
                limit,
                stop_loss=kw.get("stop_loss"),
                take_profit=kw.get("take_profit"),
                order_id=order_id,
                bar_ms=int(sim.data.timestamp[self._ctx.i]),
            )
        )
        return order_id

    def close_position(self, symbol: str | None = None) -> int | None:
        position = self.position(symbol)
        if position == 0.0:
            return None
        side = SELL if position > 0 else BUY
        if self._refused(side, symbol, abs(position), None, None, 1.0):
            return -1
        return self._intent(side, symbol, abs(position), {})

    def cancel(self, order_id: int) -> bool:
        orders = self._live.orders
        if orders is None:
            return False
        for o in orders.ledger.open_orders():
            if _sequence(o, orders.intents.get(o.client_order_id)) == order_id and o.is_working:
                self._live.cancels.append(o.client_order_id)
                return True
        return False


__all__ = ["LiveContext", "LiveSession"]
