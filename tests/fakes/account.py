"""The fake venue's spot account: balances, orders, trades and the exchange-side checks, with no I/O."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from .binance import FakeMarket

FeeAsset = Literal["received", "quote", "base"]
OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")
ZERO = Decimal(0)


class VenueError(Exception):
    """A Binance error answer: HTTP status, code and message."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(f"{code} {msg}")
        self.status = status
        self.code = code
        self.msg = msg


def _fmt(value: Decimal) -> str:
    return f"{value:.8f}"


@dataclass(slots=True)
class FakeTrade:
    """One fill of one order, as /api/v3/myTrades lists it."""

    id: int
    order_id: int
    symbol: str
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    time: int
    is_buyer: bool
    is_maker: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol, "id": self.id, "orderId": self.order_id, "orderListId": -1,
            "price": _fmt(self.price), "qty": _fmt(self.qty), "quoteQty": _fmt(self.price * self.qty),
            "commission": _fmt(self.commission), "commissionAsset": self.commission_asset, "time": self.time,
            "isBuyer": self.is_buyer, "isMaker": self.is_maker, "isBestMatch": True,
        }  # fmt: skip


@dataclass(slots=True)
class FakeOrder:
    """One order on the fake venue."""

    order_id: int
    client_id: str
    symbol: str
    side: str  # BUY | SELL
    type: str  # MARKET | LIMIT | LIMIT_MAKER
    qty: Decimal
    price: Decimal  # the limit price; 0 for a market order
    time: int
    time_in_force: str = "GTC"
    status: str = "NEW"
    executed: Decimal = ZERO
    cum_quote: Decimal = ZERO
    update_time: int = 0
    locked: Decimal = ZERO  # what this order still holds of the spent asset
    visible_from_ms: int = 0  # queries do not see it before this virtual time
    external: bool = False  # placed by "someone else" on the account
    trades: list[FakeTrade] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.executed

    def as_json(self, *, full: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "symbol": self.symbol, "orderId": self.order_id, "orderListId": -1, "clientOrderId": self.client_id,
            "price": _fmt(self.price), "origQty": _fmt(self.qty), "executedQty": _fmt(self.executed),
            "cummulativeQuoteQty": _fmt(self.cum_quote), "status": self.status, "timeInForce": self.time_in_force,
            "type": self.type, "side": self.side, "stopPrice": "0.00000000", "icebergQty": "0.00000000",
            "time": self.time, "transactTime": self.time, "updateTime": self.update_time or self.time,
            "isWorking": True, "workingTime": self.time, "origQuoteOrderQty": "0.00000000",
            "selfTradePreventionMode": "NONE",
        }  # fmt: skip
        if full:
            out["fills"] = [
                {"price": _fmt(t.price), "qty": _fmt(t.qty), "commission": _fmt(t.commission),
                 "commissionAsset": t.commission_asset, "tradeId": t.id}
                for t in self.trades
            ]  # fmt: skip
        return out


@dataclass(slots=True)
class Balance:
    """Free and locked amounts of one asset."""

    free: Decimal = ZERO
    locked: Decimal = ZERO


class Account:
    """One spot account: balances locked by open orders and moved by fills, with Binance's checks."""

    def __init__(self, balances: dict[str, Decimal | str | float], fee_rate: Decimal = Decimal("0.001")) -> None:
        self.balances: dict[str, Balance] = {a: Balance(Decimal(str(v))) for a, v in balances.items()}
        self.fee_rate = fee_rate
        self.fee_asset: FeeAsset = "received"
        self.orders: dict[int, FakeOrder] = {}
        self.trades: list[FakeTrade] = []
        self._order_ids = itertools.count(1001)
        self._trade_ids = itertools.count(5001)
        self.update_time = 0

    # ------------------------------------------------------------ lookups

    def balance(self, asset: str) -> Balance:
        return self.balances.setdefault(asset, Balance())

    def find(self, symbol: str, order_id: int | None, client_id: str | None) -> FakeOrder | None:
        """The order of `symbol` with this exchange id or client id (the newest one for a reused client id)."""
        for order in reversed(list(self.orders.values())):
            if order.symbol != symbol:
                continue
            if (order_id is not None and order.order_id == order_id) or (
                order_id is None and client_id is not None and order.client_id == client_id
            ):
                return order
        return None

    def open_orders(self, symbol: str | None = None) -> list[FakeOrder]:
        return [o for o in self.orders.values() if o.is_open and (symbol is None or o.symbol == symbol)]

    def positions(self) -> list[dict[str, str]]:
        return [{"a": a, "f": _fmt(b.free), "l": _fmt(b.locked)} for a, b in sorted(self.balances.items())]

    # ------------------------------------------------------------ orders

    def check_filters(self, market: FakeMarket, qty: Decimal, price: Decimal | None, ref_price: Decimal) -> None:
        """Binance's LOT_SIZE, PRICE_FILTER and NOTIONAL checks (-1013)."""
        step, min_qty = Decimal(market.step_size), Decimal(market.min_qty)
        if qty < min_qty or qty > Decimal("9000") or (qty - min_qty) % step != 0:
            raise VenueError(400, -1013, "Filter failure: LOT_SIZE")
        if price is not None:
            tick = Decimal(market.tick_size)
            if price < tick or price > Decimal("1000000") or price % tick != 0:
                raise VenueError(400, -1013, "Filter failure: PRICE_FILTER")
        if qty * (price if price is not None else ref_price) < Decimal(market.min_notional):
            raise VenueError(400, -1013, "Filter failure: NOTIONAL")

    def new_order(
        self,
        market: FakeMarket,
        *,
        client_id: str,
        side: str,
        type_: str,
        qty: Decimal,
        price: Decimal | None,
        ref_price: Decimal,
        now_ms: int,
        time_in_force: str = "GTC",
    ) -> FakeOrder:
        """Check and place an order, locking what a resting order needs; matching is the caller's."""
        if any(o.client_id == client_id for o in self.open_orders()):
            raise VenueError(400, -2010, "Duplicate order sent.")
        self.check_filters(market, qty, price if type_ != "MARKET" else None, ref_price)
        spend_asset = market.quote if side == "BUY" else market.base
        need = qty * (price if price is not None and type_ != "MARKET" else ref_price) if side == "BUY" else qty
        if self.balance(spend_asset).free < need:
            raise VenueError(400, -2010, "Account has insufficient balance for requested action.")
        order = FakeOrder(
            order_id=next(self._order_ids), client_id=client_id, symbol=market.id, side=side, type=type_,
            qty=qty, price=price if type_ != "MARKET" and price is not None else ZERO, time=now_ms,
            time_in_force=time_in_force if type_ == "LIMIT" else "GTC", update_time=now_ms,
        )  # fmt: skip
        if type_ != "MARKET":
            order.locked = need
            bal = self.balance(spend_asset)
            bal.free -= need
            bal.locked += need
        self.orders[order.order_id] = order
        self.update_time = now_ms
        return order

    def fill(
        self, market: FakeMarket, order: FakeOrder, qty: Decimal, price: Decimal, now_ms: int, *, maker: bool
    ) -> FakeTrade:
        """Fill `qty` of `order` at `price`: move balances, charge the fee, record the trade."""
        qty = min(qty, order.remaining)
        buy = order.side == "BUY"
        quote_amount = qty * price
        fee_in = self.fee_asset
        if fee_in == "received":
            fee_in = "base" if buy else "quote"
        fee_asset = market.base if fee_in == "base" else market.quote
        fee = (qty if fee_in == "base" else quote_amount) * self.fee_rate
        base, quote = self.balance(market.base), self.balance(market.quote)
        if buy:
            released = qty * order.price if order.locked else ZERO
            quote.locked -= released
            order.locked -= released
            quote.free += released - quote_amount
            base.free += qty
        else:
            if order.locked:
                base.locked -= qty
                order.locked -= qty
            else:
                base.free -= qty
            quote.free += quote_amount
        self.balance(fee_asset).free -= fee
        trade = FakeTrade(
            next(self._trade_ids), order.order_id, order.symbol, price, qty, fee, fee_asset, now_ms, buy, maker
        )
        order.trades.append(trade)
        self.trades.append(trade)
        order.executed += qty
        order.cum_quote += quote_amount
        order.status = "FILLED" if order.remaining <= 0 else "PARTIALLY_FILLED"
        order.update_time = now_ms
        if order.status == "FILLED":
            self._release(market, order)
        self.update_time = now_ms
        return trade

    def end(self, market: FakeMarket, order: FakeOrder, status: str, now_ms: int) -> None:
        """Close an open order as CANCELED or EXPIRED, releasing what it still locks."""
        order.status = status
        order.update_time = now_ms
        self._release(market, order)
        self.update_time = now_ms

    def _release(self, market: FakeMarket, order: FakeOrder) -> None:
        if order.locked:
            bal = self.balance(market.quote if order.side == "BUY" else market.base)
            bal.locked -= order.locked
            bal.free += order.locked
            order.locked = ZERO

    # ------------------------------------------------------------ trade history

    def my_trades(
        self,
        symbol: str,
        *,
        order_id: int | None = None,
        from_id: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
        hidden: Iterable[int] = (),
    ) -> list[FakeTrade]:
        """Binance's myTrades: fromId or startTime pages forward; neither gives the newest `limit`."""
        skip = set(hidden)
        rows = [t for t in self.trades if t.symbol == symbol and t.order_id not in skip]
        if order_id is not None:
            rows = [t for t in rows if t.order_id == order_id]
        if from_id is not None:
            return [t for t in rows if t.id >= from_id][:limit]
        if start_ms is not None or end_ms is not None:
            lo = start_ms if start_ms is not None else (end_ms or 0) - 86_400_000
            hi = end_ms if end_ms is not None else lo + 86_400_000
            return [t for t in rows if lo <= t.time <= hi][:limit]
        return rows[-limit:]
