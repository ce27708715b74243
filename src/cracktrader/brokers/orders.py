"""One order model for paper and live: the state machine, fills applied once, exact averages, `orders` events.

An order is created `pending_new` (checked locally, not sent), becomes `submitted` when it goes to the venue,
`open` once the venue confirms it rests, and ends `filled`, `canceled`, `expired` or `rejected`. Live orders add
`unknown` (sent, outcome not known: looked up, never re-sent), `pending_cancel` (a cancel is on its way) and
`rejected_unconfirmed` (an unknown order the venue never showed: watched, and brought back by any later evidence).
Quantities are kept as exact fractions of the decimal numbers the venue sent (0.1 is 1/10, not the nearest binary
float), so an average price is sum(qty * price) / sum(qty) without rounding and a fill can never push `filled` past
`amount`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Any, ClassVar, Literal, get_args

from cracktrader.engine.context import OrderKind, Side
from cracktrader.errors import CracktraderError, UserInputError

Number = int | float | str | Decimal | Fraction

# Why a live order was sent: the strategy's signal, the session's brackets, a control, or found on the venue.
Intent = Literal["signal", "stop_loss", "take_profit", "control", "adopted"]

# The seed 001 `orders` channel message, key for key.
CHANNEL_KEYS = ("order_id", "status", "symbol", "side", "amount", "price", "timestamp")


class OrderStatus(StrEnum):
    """Where an order is in its life; filled, canceled, expired and rejected are final."""

    PENDING_NEW = "pending_new"
    SUBMITTED = "submitted"
    UNKNOWN = "unknown"
    OPEN = "open"
    PARTIALLY_FILLED = "partially_filled"
    PENDING_CANCEL = "pending_cancel"
    FILLED = "filled"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REJECTED = "rejected"
    REJECTED_UNCONFIRMED = "rejected_unconfirmed"

    @property
    def is_final(self) -> bool:
        """Whether no further change is allowed."""
        return self in FINAL_STATES


_S = OrderStatus
FINAL_STATES = frozenset({_S.FILLED, _S.CANCELED, _S.EXPIRED, _S.REJECTED})
# Allowed transitions. A market order can fill before the venue ever reports it `open`, so `submitted` may go
# straight to a fill; only the venue rejects or expires, so `pending_new` is rejected locally (risk, rules) or
# canceled before it was sent; another partial fill keeps `partially_filled`. An `unknown` order takes whatever the
# venue shows; a cancel in flight may meet a fill (it ends `filled`) or a refusal (the order is still `open`); a
# `rejected_unconfirmed` order is not final: later evidence of it brings it back.
_EVIDENCE = frozenset({_S.OPEN, _S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELED, _S.EXPIRED})
TRANSITIONS: Mapping[OrderStatus, frozenset[OrderStatus]] = {
    _S.PENDING_NEW: frozenset({_S.SUBMITTED, _S.REJECTED, _S.CANCELED}),
    _S.SUBMITTED: _EVIDENCE | {_S.REJECTED, _S.UNKNOWN, _S.PENDING_CANCEL},
    _S.UNKNOWN: _EVIDENCE | {_S.REJECTED, _S.REJECTED_UNCONFIRMED, _S.PENDING_CANCEL},
    _S.OPEN: frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELED, _S.EXPIRED, _S.PENDING_CANCEL}),
    _S.PARTIALLY_FILLED: frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELED, _S.EXPIRED, _S.PENDING_CANCEL}),
    _S.PENDING_CANCEL: _EVIDENCE | {_S.PENDING_CANCEL},
    _S.REJECTED_UNCONFIRMED: _EVIDENCE,
    _S.FILLED: frozenset(),
    _S.CANCELED: frozenset(),
    _S.EXPIRED: frozenset(),
    _S.REJECTED: frozenset(),
}
# States in which the venue may still execute the order (an unknown one counts at full size).
WORKING_STATES = frozenset({_S.SUBMITTED, _S.UNKNOWN, _S.OPEN, _S.PARTIALLY_FILLED, _S.PENDING_CANCEL})
# States a fill may arrive in: the working ones, and an unconfirmed order that turns out to exist.
FILLABLE_STATES = WORKING_STATES | {_S.REJECTED_UNCONFIRMED}

_SIDES: tuple[str, ...] = get_args(Side)
_KINDS: tuple[str, ...] = get_args(OrderKind)


class InvalidOrderError(UserInputError):
    """An order or fill whose fields cannot be right (unknown side, non-positive amount, missing limit price)."""

    code = "INVALID_ORDER"
    status_code = 422


class IllegalTransitionError(CracktraderError):
    """A status change the state machine does not allow."""

    code = "ILLEGAL_ORDER_TRANSITION"
    status_code = 409

    def __init__(self, order_id: str, current: OrderStatus, target: OrderStatus) -> None:
        allowed = [str(s) for s in OrderStatus if s in TRANSITIONS[current]]
        why = f"{current} is final" if current.is_final else f"from {current} it may go to {', '.join(allowed)}"
        super().__init__(
            f"order {order_id} cannot go from {current} to {target}: {why}",
            details={"order_id": order_id, "from": str(current), "to": str(target), "allowed": allowed},
        )
        self.current = current
        self.target = target


class OverfillError(CracktraderError):
    """A fill that would take an order's filled amount past its amount."""

    code = "ORDER_OVERFILL"
    status_code = 409


class DuplicateOrderError(CracktraderError):
    """A client order id that the ledger already holds."""

    code = "DUPLICATE_ORDER_ID"
    status_code = 409


class OrderNotFoundError(CracktraderError):
    """A client order id that the ledger does not hold."""

    code = "ORDER_NOT_FOUND"
    status_code = 404


def exact(value: Number, what: str) -> Fraction:
    """`value` as an exact fraction of its decimal notation (a float by its shortest repr: 0.1 -> 1/10)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal | Fraction):
        raise InvalidOrderError(f"{what} must be a number, got {value!r}", details={"field": what})
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidOrderError(f"{what} must be a finite number, got {value!r}", details={"field": what})
        return Fraction(repr(value))
    try:
        out = Fraction(value)
    except (ValueError, ZeroDivisionError, ArithmeticError) as exc:  # "abc", "nan", Decimal("inf")
        raise InvalidOrderError(f"{what} must be a finite number, got {value!r}", details={"field": what}) from exc
    return out


def _positive(value: Number, what: str) -> Fraction:
    out = exact(value, what)
    if out <= 0:
        raise InvalidOrderError(f"{what} must be greater than 0, got {value!r}", details={"field": what})
    return out


@dataclass(frozen=True, slots=True)
class TradeFill:
    """One execution reported by the venue (or the paper broker); `(exchange, symbol, trade_id)` identifies it."""

    exchange: str
    symbol: str
    trade_id: str
    qty: Number
    price: Number
    timestamp: int
    client_order_id: str | None = None
    exchange_order_id: str | None = None
    fee: Number = 0
    fee_currency: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        """What makes two reports the same fill."""
        return (self.exchange, self.symbol, self.trade_id)


@dataclass(frozen=True, slots=True)
class OrphanFill:
    """A fill kept aside for reconciliation: no order it names is known, or that order is already final."""

    fill: TradeFill
    reason: str


@dataclass(slots=True)
class ManagedOrder:
    """An order as the session tracks it, from local creation to its final state.

    `price` is the limit price (limit, stop_limit), `stop` the trigger (stop, stop_limit); both None otherwise.
    Timestamps are ms from the session's clock, passed in by the caller.
    """

    client_order_id: str
    exchange: str
    symbol: str
    side: Side
    type: OrderKind
    amount: float
    created_at: int
    price: float | None = None
    stop: float | None = None
    exchange_order_id: str | None = None
    status: OrderStatus = OrderStatus.PENDING_NEW
    updated_at: int | None = None
    reason: str | None = None  # why it was rejected, canceled or expired
    filled_qty: Fraction = field(default_factory=Fraction)
    filled_cost: Fraction = field(default_factory=Fraction)  # sum of qty * price over its fills
    fees: dict[str, Fraction] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.client_order_id:
            raise InvalidOrderError("client_order_id must be a non-empty string", details={"field": "client_order_id"})
        if self.side not in _SIDES:
            raise InvalidOrderError(
                f"side must be one of {', '.join(_SIDES)}, got {self.side!r}", details={"field": "side"}
            )
        if self.type not in _KINDS:
            raise InvalidOrderError(
                f"type must be one of {', '.join(_KINDS)}, got {self.type!r}", details={"field": "type"}
            )
        _positive(self.amount, "amount")
        needs_price = self.type in ("limit", "stop_limit")
        needs_stop = self.type in ("stop", "stop_limit")
        for name, needed in (("price", needs_price), ("stop", needs_stop)):
            value = getattr(self, name)
            if needed and value is None:
                raise InvalidOrderError(f"a {self.type} order needs a {name}", details={"field": name})
            if not needed and value is not None:
                raise InvalidOrderError(f"a {self.type} order takes no {name}, got {value!r}", details={"field": name})
            if value is not None:
                _positive(value, name)
        self.status = OrderStatus(self.status)
        if self.updated_at is None:
            self.updated_at = self.created_at

    @property
    def filled(self) -> float:
        """Amount executed so far."""
        return float(self.filled_qty)

    @property
    def remaining(self) -> float:
        """Amount still to execute (0 once final)."""
        if self.status.is_final:
            return 0.0
        return float(exact(self.amount, "amount") - self.filled_qty)

    @property
    def average_price_exact(self) -> Fraction | None:
        """Volume-weighted average fill price, exact; None before the first fill."""
        return self.filled_cost / self.filled_qty if self.filled_qty else None

    @property
    def average_price(self) -> float | None:
        """Volume-weighted average fill price; None before the first fill."""
        avg = self.average_price_exact
        return None if avg is None else float(avg)

    @property
    def fees_paid(self) -> dict[str, float]:
        """Fees per currency (negative: a rebate)."""
        return {cur: float(v) for cur, v in self.fees.items()}

    @property
    def is_working(self) -> bool:
        """Whether the venue may still execute it."""
        return self.status in WORKING_STATES

    def _move(self, target: OrderStatus, timestamp: int) -> None:
        if target not in TRANSITIONS[self.status]:
            raise IllegalTransitionError(self.client_order_id, self.status, target)
        self.status = target
        self.updated_at = timestamp

    def _book(self, fill: TradeFill) -> OrderStatus:
        """Add a fill's quantity, cost and fee; the caller has ruled out duplicates. Returns the new status."""
        qty = _positive(fill.qty, "fill qty")
        price = _positive(fill.price, "fill price")
        fee = exact(fill.fee, "fee")
        if self.status not in FILLABLE_STATES:
            raise IllegalTransitionError(self.client_order_id, self.status, OrderStatus.PARTIALLY_FILLED)
        amount = exact(self.amount, "amount")
        total = self.filled_qty + qty
        if total > amount:
            raise OverfillError(
                f"fill {fill.trade_id} of {float(qty)} would take order {self.client_order_id} to "
                f"{float(total)} filled; its amount is {self.amount} with {float(amount - self.filled_qty)} left",
                details={
                    "order_id": self.client_order_id,
                    "trade_id": fill.trade_id,
                    "qty": float(qty),
                    "amount": self.amount,
                    "filled": float(self.filled_qty),
                },
            )
        target = OrderStatus.FILLED if total == amount else OrderStatus.PARTIALLY_FILLED
        if target is OrderStatus.PARTIALLY_FILLED and self.status is OrderStatus.PENDING_CANCEL:
            target = OrderStatus.PENDING_CANCEL  # the cancel is still on its way
        self._move(target, fill.timestamp)
        self.filled_qty = total
        self.filled_cost += qty * price
        if fee:
            currency = fill.fee_currency or ""
            self.fees[currency] = self.fees.get(currency, Fraction(0)) + fee
        return target


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """One change of an order, as published on the `orders` channel."""

    order_id: str
    status: OrderStatus
    symbol: str
    side: Side
    type: OrderKind
    amount: float
    price: float | None  # the limit price; for orders without one, the average fill price once filled
    timestamp: int
    filled: float
    average_price: float | None
    exchange_order_id: str | None
    reason: str | None
    fill: TradeFill | None = None  # the fill that caused this change, if one did

    CHANNEL: ClassVar[str] = "orders"

    @classmethod
    def of(cls, order: ManagedOrder, fill: TradeFill | None = None) -> OrderEvent:
        """The event for `order` as it is now."""
        avg = order.average_price
        return cls(
            order_id=order.client_order_id,
            status=order.status,
            symbol=order.symbol,
            side=order.side,
            type=order.type,
            amount=order.amount,
            price=order.price if order.price is not None else avg,
            timestamp=order.updated_at if order.updated_at is not None else order.created_at,
            filled=order.filled,
            average_price=avg,
            exchange_order_id=order.exchange_order_id,
            reason=order.reason,
            fill=fill,
        )

    def to_channel(self) -> dict[str, Any]:
        """The `data` of seed 001's `orders` channel message: exactly its seven keys."""
        return {
            "order_id": self.order_id,
            "status": str(self.status),
            "symbol": self.symbol,
            "side": self.side,
            "amount": self.amount,
            "price": self.price,
            "timestamp": self.timestamp,
        }

    def to_dict(self) -> dict[str, Any]:
        """The channel's keys plus type, filled, average price, exchange order id, reason and the trade id."""
        return {
            **self.to_channel(),
            "type": self.type,
            "filled": self.filled,
            "average_price": self.average_price,
            "exchange_order_id": self.exchange_order_id,
            "reason": self.reason,
            "trade_id": self.fill.trade_id if self.fill is not None else None,
        }


class OrderLedger:
    """A session's orders and the fills applied to them, each fill exactly once.

    Every change returns the `OrderEvent` to publish. A fill seen before (same exchange, symbol and trade id) is
    ignored and counted; a fill for an order the ledger cannot place is kept in `orphans` until `adopt_orphans`.
    """

    def __init__(self) -> None:
        self._orders: dict[str, ManagedOrder] = {}
        self._by_exchange_id: dict[tuple[str, str], str] = {}
        self._seen: set[tuple[str, str, str]] = set()
        self.orphans: list[OrphanFill] = []
        self.duplicate_fills = 0

    def __len__(self) -> int:
        return len(self._orders)

    def __iter__(self) -> Iterator[ManagedOrder]:
        return iter(self._orders.values())

    def __contains__(self, client_order_id: object) -> bool:
        return client_order_id in self._orders

    def get(self, client_order_id: str) -> ManagedOrder:
        """The order with this client id."""
        try:
            return self._orders[client_order_id]
        except KeyError:
            raise OrderNotFoundError(
                f"no order with client_order_id {client_order_id!r}", details={"order_id": client_order_id}
            ) from None

    def find(self, exchange: str, exchange_order_id: str) -> ManagedOrder | None:
        """The order the venue knows by `exchange_order_id`, if any."""
        cid = self._by_exchange_id.get((exchange, exchange_order_id))
        return None if cid is None else self._orders[cid]

    def open_orders(self, symbol: str | None = None) -> list[ManagedOrder]:
        """Orders not yet final (pending_new and unknown included: they hold a slot), optionally of one symbol.

        A `rejected_unconfirmed` order is only watched: it holds no slot.
        """
        return [
            o
            for o in self._orders.values()
            if not o.status.is_final
            and o.status is not OrderStatus.REJECTED_UNCONFIRMED
            and (symbol is None or o.symbol == symbol)
        ]

    def add(self, order: ManagedOrder) -> OrderEvent:
        """Register a new order (normally `pending_new`)."""
        if order.client_order_id in self._orders:
            raise DuplicateOrderError(
                f"an order with client_order_id {order.client_order_id!r} already exists",
                details={"order_id": order.client_order_id},
            )
        self._orders[order.client_order_id] = order
        if order.exchange_order_id is not None:
            self._index(order)
        return OrderEvent.of(order)

    def load(self, order: ManagedOrder, fill_keys: Iterable[tuple[str, str, str]]) -> None:
        """Put back a stored order as it was (a restart), with the keys of the fills already counted in it."""
        self.add(order)
        self._seen.update(fill_keys)

    def load_fill(self, fill: TradeFill) -> None:
        """Remember a stored fill as applied (its order was loaded with it counted), so a re-delivery is a duplicate."""
        self._seen.add(fill.key)

    def submit(self, client_order_id: str, timestamp: int) -> OrderEvent:
        """The order was sent to the venue."""
        return self.transition(client_order_id, OrderStatus.SUBMITTED, timestamp)

    def acknowledge(self, client_order_id: str, exchange_order_id: str, timestamp: int) -> OrderEvent:
        """The venue accepted the order under `exchange_order_id`: `submitted` becomes `open`.

        A later state (a fill or a cancel that overtook the acknowledgement) is kept; only the id is recorded.
        """
        order = self.get(client_order_id)
        if order.status in (OrderStatus.SUBMITTED, OrderStatus.UNKNOWN, OrderStatus.REJECTED_UNCONFIRMED):
            order._move(OrderStatus.OPEN, timestamp)
        order.exchange_order_id = exchange_order_id
        order.updated_at = timestamp
        self._index(order)
        return OrderEvent.of(order)

    def transition(
        self, client_order_id: str, status: OrderStatus, timestamp: int, reason: str | None = None
    ) -> OrderEvent:
        """Move an order to `status`; fills go through `apply_fill` instead."""
        order = self.get(client_order_id)
        if status in (OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED):
            raise InvalidOrderError(
                f"order {client_order_id} becomes {status} only through a fill (apply_fill)",
                details={"order_id": client_order_id, "to": str(status)},
            )
        order._move(status, timestamp)
        if reason is not None:
            order.reason = reason
        return OrderEvent.of(order)

    def cancel_refused(self, client_order_id: str, timestamp: int) -> OrderEvent:
        """The venue still holds an order whose cancel was sent: back to `open` or `partially_filled`."""
        order = self.get(client_order_id)
        order._move(OrderStatus.PARTIALLY_FILLED if order.filled_qty else OrderStatus.OPEN, timestamp)
        return OrderEvent.of(order)

    def cancel(self, client_order_id: str, timestamp: int, reason: str = "canceled") -> OrderEvent:
        """The order was canceled (by the strategy, a control or the venue)."""
        return self.transition(client_order_id, OrderStatus.CANCELED, timestamp, reason)

    def expire(self, client_order_id: str, timestamp: int, reason: str = "expired") -> OrderEvent:
        """The venue expired the order (time in force)."""
        return self.transition(client_order_id, OrderStatus.EXPIRED, timestamp, reason)

    def reject(self, client_order_id: str, timestamp: int, reason: str) -> OrderEvent:
        """The order was refused, locally (risk, exchange rules) or by the venue; `reason` says why."""
        return self.transition(client_order_id, OrderStatus.REJECTED, timestamp, reason)

    def apply_fill(self, fill: TradeFill) -> OrderEvent | None:
        """Apply a fill once. None when it was a duplicate (counted) or kept as an orphan.

        Raises OverfillError, and leaves the order unchanged, when it exceeds the order's amount.
        """
        if fill.key in self._seen:
            self.duplicate_fills += 1
            return None
        order = self._owner(fill)
        if order is None:
            self._keep(fill, "unknown order")
            return None
        if order.status.is_final:
            self._keep(fill, f"order {order.client_order_id} is already {order.status}")
            return None
        order._book(fill)  # raises before `_seen` is touched: a refused fill is not remembered as applied
        self._seen.add(fill.key)
        return OrderEvent.of(order, fill)

    def adopt_orphans(self) -> list[OrderEvent]:
        """Apply kept fills whose order is now known and working (e.g. once `acknowledge` recorded its id).

        A kept fill that would overfill its order stays kept, its reason saying so.
        """
        events: list[OrderEvent] = []
        kept: list[OrphanFill] = []
        for orphan in self.orphans:
            order = self._owner(orphan.fill)
            if order is None or order.status.is_final:
                kept.append(orphan)
                continue
            try:
                order._book(orphan.fill)
            except OverfillError as exc:
                kept.append(OrphanFill(orphan.fill, exc.message))
                continue
            events.append(OrderEvent.of(order, orphan.fill))
        self.orphans = kept
        return events

    def _owner(self, fill: TradeFill) -> ManagedOrder | None:
        if fill.client_order_id is not None and fill.client_order_id in self._orders:
            return self._orders[fill.client_order_id]
        if fill.exchange_order_id is not None:
            return self.find(fill.exchange, fill.exchange_order_id)
        return None

    def _keep(self, fill: TradeFill, reason: str) -> None:
        # Its key counts as seen: a re-delivery is a duplicate, and adopt_orphans applies the kept copy.
        self._seen.add(fill.key)
        self.orphans.append(OrphanFill(fill, reason))

    def _index(self, order: ManagedOrder) -> None:
        assert order.exchange_order_id is not None
        self._by_exchange_id[(order.exchange, order.exchange_order_id)] = order.client_order_id
