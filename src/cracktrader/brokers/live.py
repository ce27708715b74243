"""Real orders through ccxt, never lost and never duplicated: the live broker's order path.

Every order is written `pending_new` (in the transaction that checks the session's fencing token) before its
request goes out; an order whose outcome is unknown is looked up by its client id, never sent again; a fill
counts once, whichever of the create response, the user-data socket or REST brings it. The venue's word always
wins over the local state: `apply_snapshot` takes what it shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import ccxt

from cracktrader import failpoints
from cracktrader.brokers.orders import (
    Intent,
    ManagedOrder,
    OrderEvent,
    OrderLedger,
    OrderStatus,
    OverfillError,
    TradeFill,
    exact,
)
from cracktrader.clock import Clock
from cracktrader.engine.context import OrderKind, Side
from cracktrader.engine.records import REASON_BELOW_MIN_AMOUNT, REASON_BELOW_MIN_NOTIONAL
from cracktrader.engine.rules import MarketRules, amount_to_precision, minimum_refusal, price_to_precision
from cracktrader.exchanges.client_ids import ClientIdError, make_client_id, parse_client_id
from cracktrader.exchanges.fees import paid_fee
from cracktrader.exchanges.order_calls import Outcome

log = logging.getLogger(__name__)

# An unknown order that no lookup found stays on the watch list this long: any later sign of it revives it.
WATCH_MS = 24 * 3600 * 1000


class SendResultLike(Protocol):
    """The answer to one create request."""

    @property
    def outcome(self) -> Any: ...
    @property
    def order(self) -> Mapping[str, Any] | None: ...
    @property
    def code(self) -> str | None: ...
    @property
    def message(self) -> str | None: ...


class OrderCallsLike(Protocol):
    """The exchange-facing calls (exchanges.order_calls.OrderCalls); none of them re-sends an order."""

    async def create(self, order: ManagedOrder) -> SendResultLike: ...
    async def locate(self, symbol: str, client_order_id: str) -> dict[str, Any] | None: ...
    async def lookup(self, symbol: str, client_order_id: str) -> dict[str, Any] | None: ...
    async def cancel(self, symbol: str, client_order_id: str) -> dict[str, Any] | None: ...
    async def trades(self, symbol: str, since_ms: int | None) -> list[dict[str, Any]]: ...


class LiveStoreLike(Protocol):
    """The live orders' rows (db.live_store.LiveOrderStore); every write checks the fencing token."""

    async def insert_pending(
        self,
        run_id: str,
        token: int,
        order: ManagedOrder,
        *,
        intent: Intent = "signal",
        stop_loss: float | None = None,
        take_profit: float | None = None,
        bar_ms: int | None = None,
    ) -> None: ...
    async def save_order(
        self, run_id: str, token: int, order: ManagedOrder, *, watch_until: int | None = None
    ) -> None: ...
    async def record_fill(self, run_id: str, token: int, fill: TradeFill, order: ManagedOrder) -> bool: ...


class Portfolio(Protocol):
    """The session's cash and positions, which the venue's fills are booked into (the simulator's book)."""

    @property
    def symbols(self) -> tuple[str, ...]: ...
    @property
    def cash(self) -> float: ...
    def position(self, symbol: str) -> float: ...
    def book(self, order: ManagedOrder, fill: TradeFill, intent: OrderIntent | None) -> None: ...


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """An order the strategy (or a control) wants: what goes out once the local checks pass."""

    symbol: str
    side: Side
    type: OrderKind
    amount: float
    price: float | None = None
    intent: Intent = "signal"
    stop_loss: float | None = None  # as the backtest's: a fraction of the entry price
    take_profit: float | None = None
    order_id: int | None = None  # the number the strategy was given; the client id's sequence
    bar_ms: int | None = None  # open time of the bar the strategy decided it on (None: not a strategy's order)


@dataclass(slots=True)
class Bracket:
    """Stop-loss and take-profit prices the session holds for a filled entry until its position is closed."""

    symbol: str
    stop_loss: float | None
    take_profit: float | None

    @classmethod
    def of(cls, order: ManagedOrder, intent: OrderIntent) -> Bracket | None:
        """The levels of a (partly) filled long entry: fractions of its average fill price, as the backtest's."""
        avg = order.average_price
        if avg is None or order.side != "buy" or (intent.stop_loss is None and intent.take_profit is None):
            return None
        return cls(
            order.symbol,
            None if intent.stop_loss is None else avg * (1 - intent.stop_loss),
            None if intent.take_profit is None else avg * (1 + intent.take_profit),
        )


class LiveOrders:
    """One live session's orders: local checks, the write before the send, outcomes, fills, cancels, brackets."""

    def __init__(
        self,
        *,
        run_id: str,
        token: Callable[[], int],
        exchange: str,
        tag: str,
        calls: OrderCallsLike,
        store: LiveStoreLike,
        clock: Clock,
        portfolio: Portfolio,
        rules: Mapping[str, MarketRules] | None = None,
        on_event: Callable[[OrderEvent], None] | None = None,
        next_sequence: int = 1,
    ) -> None:
        self.run_id = run_id
        self._token = token
        self.exchange = exchange
        self.tag = tag
        self.calls = calls
        self.store = store
        self.clock = clock
        self.portfolio = portfolio
        self.rules = dict(rules or {})
        self.on_event = on_event
        self.ledger = OrderLedger()
        self.intents: dict[str, OrderIntent] = {}
        self.brackets: dict[str, Bracket] = {}  # entry client id -> its levels, while its position is open
        self.watch_until: dict[str, int] = {}
        self.last_prices: dict[str, float] = {}
        self.sent = 0  # create requests that left the process
        self._sequence = next_sequence
        # Restored strategy orders a resumed session may decide again (their bar was not saved before a crash).
        self._undecided: list[str] = []
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._last_fill: dict[str, int] = {}
        self._cancelling: set[str] = set()  # cancels on their way: an `open` snapshot meanwhile is not a refusal
        self._placing: set[str] = set()  # sends on their way (their own task settles them, lookups included)
        # Fills the ledger applied whose store write is on its way (another path may have met them first).
        self._storing = 0
        self._stored = asyncio.Event()
        self._stored.set()

    # --- ids ----------------------------------------------------------------------------------------------------

    def next_client_id(self, sequence: int | None = None) -> str:
        """The client order id of order number `sequence` (default: the next one) with the session's tag."""
        if sequence is None:
            sequence = self._sequence
        self._sequence = max(self._sequence, sequence + 1)
        return make_client_id(self.tag, sequence)

    def sequence_of(self, client_order_id: str) -> int:
        """The order number a client id carries (what the strategy and the controls call the order)."""
        intent = self.intents.get(client_order_id)
        if intent is not None and intent.order_id is not None:
            return intent.order_id
        return _sequence_of(client_order_id)

    @property
    def last_sequence(self) -> int:
        """The highest order number used so far."""
        return self._sequence - 1

    # --- placing ------------------------------------------------------------------------------------------------

    def local_refusal(self, intent: OrderIntent, amount: float, price: float | None) -> str | None:
        """Why the order must not go out (precision, minimums, the session's capital), else None."""
        est = price if price is not None else self.last_prices.get(intent.symbol)
        rules = self.rules.get(intent.symbol)
        if amount <= 0:
            return "BELOW_MIN_AMOUNT"
        if rules is not None:
            code = minimum_refusal(rules, amount, est if est is not None else float("nan"))
            if code is not None:
                return _LOCAL_CODES.get(code, "REJECTED_LOCALLY")
        if intent.side == "buy":
            fee = rules.taker_fee if rules is not None else 0.0
            if est is None or amount * est * (1 + fee) > self.available_cash() * (1 + 1e-9):
                return "INSUFFICIENT_CAPITAL"
        elif amount > self.available_position(intent.symbol) * (1 + 1e-9):
            return "INSUFFICIENT_POSITION"
        return None

    def _shaped(self, intent: OrderIntent) -> tuple[float, float | None]:
        rules = self.rules.get(intent.symbol)
        amount, price = float(intent.amount), intent.price
        if rules is not None:
            amount = amount_to_precision(rules, amount)
            if price is not None:
                price = price_to_precision(rules, price)
        return amount, price

    async def place(self, intent: OrderIntent) -> ManagedOrder:
        """Check, store `pending_new`, send once, and take the outcome. Waits while an order of the same symbol and
        side is unknown (it holds the lock until the lookup decides).
        """
        lock = self._locks.setdefault((intent.symbol, intent.side), asyncio.Lock())
        async with lock:
            earlier = self._decided_before_restart(intent)
            if earlier is not None:
                return earlier
            amount, price = self._shaped(intent)
            now = self.clock.now_ms()
            order = ManagedOrder(
                self.next_client_id(intent.order_id),
                self.exchange,
                intent.symbol,
                intent.side,
                intent.type,
                amount if amount > 0 else float(intent.amount),
                now,
                price=price if intent.type == "limit" else None,
            )
            refusal = self.local_refusal(intent, amount, price)
            self.ledger.add(order)
            self.intents[order.client_order_id] = intent
            self._placing.add(order.client_order_id)
            try:
                return await self._send(order, intent, refusal)
            finally:
                self._placing.discard(order.client_order_id)

    async def _send(self, order: ManagedOrder, intent: OrderIntent, refusal: str | None) -> ManagedOrder:
        """Store, send once and settle one order (under its symbol and side's lock)."""
        now = order.created_at
        if refusal is not None:
            log.info("live %s: %s %s %s refused locally: %s", self.run_id, intent.intent, order.side, order.symbol,
                     refusal)  # fmt: skip
            self._emit(self.ledger.reject(order.client_order_id, now, refusal))
            await self.store.insert_pending(self.run_id, self._token(), order, intent=intent.intent)
            return order
        failpoints.hit("live.before_store")
        await self.store.insert_pending(
            self.run_id,
            self._token(),
            order,
            intent=intent.intent,
            stop_loss=intent.stop_loss,
            take_profit=intent.take_profit,
            bar_ms=intent.bar_ms,
        )
        failpoints.hit("live.after_store")
        self._emit(self.ledger.submit(order.client_order_id, self.clock.now_ms()))
        self.sent += 1
        try:
            result = await self.calls.create(order)
        except asyncio.CancelledError:
            await self.mark_unknown(order, "send cancelled")
            raise
        await self._take_outcome(order, result)
        if order.status is OrderStatus.UNKNOWN:
            await self.resolve_unknown(order.client_order_id)
        return order

    def _decided_before_restart(self, intent: OrderIntent) -> ManagedOrder | None:
        """The stored order this intent already is, when the strategy decides again a bar it decided before a restart.

        A restart resumes from the last bar whose state was saved; an order a later bar sent before the crash is in
        the store. Decided again on the same bar, the same order (symbol, side, type, in the bar's order of
        decisions) is that one: it is followed, not sent a second time.
        """
        if intent.bar_ms is None or intent.intent != "signal" or not self._undecided:
            return None
        bar = intent.bar_ms
        # Bars come in time order: a stored order of an earlier bar can no longer be decided again.
        self._undecided = [cid for cid in self._undecided if (self.intents[cid].bar_ms or 0) >= bar]
        for cid in self._undecided:
            stored = self.intents[cid]
            if (stored.bar_ms, stored.symbol, stored.side, stored.type) == (bar, intent.symbol, intent.side,
                                                                              intent.type):  # fmt: skip
                self._undecided.remove(cid)
                # The strategy's updates about it carry the number it was given this time.
                self.intents[cid] = dataclasses.replace(stored, order_id=intent.order_id)
                log.info("live %s: %s on the bar at %d was sent before the restart: followed, not sent again",
                         self.run_id, cid, intent.bar_ms)  # fmt: skip
                order = self.ledger.get(cid)
                assert order is not None
                return order
        return None

    async def _take_outcome(self, order: ManagedOrder, result: SendResultLike) -> None:
        outcome = Outcome(str(result.outcome))
        now = self.clock.now_ms()
        if outcome is Outcome.ACCEPTED and result.order is not None:
            await self.apply_snapshot(order, result.order)
            if result.order.get("status") is None:
                await self._read_back(order)
        elif outcome is Outcome.REJECTED:
            self._emit(self.ledger.reject(order.client_order_id, now, result.code or "REJECTED"))
            await self._save(order)
        else:  # unknown (and an accepted answer without the order in it)
            await self.mark_unknown(order, result.code or "UNKNOWN_OUTCOME")

    async def _read_back(self, order: ManagedOrder) -> None:
        """Read an accepted order's state once: some venues (OKX) answer a new order with its ids, not its fills."""
        try:
            snap = await self.calls.lookup(order.symbol, order.client_order_id)
        except ccxt.BaseError as exc:  # the socket and the periodic reconciliation follow it instead
            log.info("live %s: reading back %s failed: %s", self.run_id, order.client_order_id, exc)
            return
        if snap is not None:
            await self.apply_snapshot(order, snap)

    async def mark_unknown(self, order: ManagedOrder, reason: str) -> None:
        """The order may have gone out, but nobody knows: `unknown` (a stored `pending_new` after a restart too)."""
        now = self.clock.now_ms()
        if order.status is OrderStatus.PENDING_NEW:
            self._emit(self.ledger.submit(order.client_order_id, now))
        if order.status is OrderStatus.SUBMITTED:
            self._emit(self.ledger.transition(order.client_order_id, OrderStatus.UNKNOWN, now, reason))
        await self._save(order)

    async def adopt(self, snap: Mapping[str, Any]) -> ManagedOrder:
        """Take in an order with the session's tag that the venue holds and the session's rows do not."""
        order = ManagedOrder(
            str(snap["clientOrderId"]),
            self.exchange,
            str(snap["symbol"]),
            snap["side"],
            "limit" if snap.get("type") == "limit" else "market",
            float(snap["amount"]),
            int(snap.get("timestamp") or self.clock.now_ms()),
            price=float(snap["price"]) if snap.get("type") == "limit" and snap.get("price") else None,
        )
        self.ledger.add(order)
        self.intents[order.client_order_id] = OrderIntent(order.symbol, order.side, order.type, order.amount,
                                                          order.price, intent="adopted")  # fmt: skip
        self._sequence = max(self._sequence, _sequence_of(order.client_order_id) + 1)
        await self.store.insert_pending(self.run_id, self._token(), order, intent="adopted")
        self.ledger.submit(order.client_order_id, self.clock.now_ms())
        await self.apply_snapshot(order, snap)
        await self._save(order)
        return order

    def owner_of(self, snap: Mapping[str, Any]) -> ManagedOrder | None:
        """The session's order a venue order event is about (by client id, else by the venue's id)."""
        cid = snap.get("clientOrderId")
        if isinstance(cid, str) and cid in self.ledger:
            return self.ledger.get(cid)
        xid = snap.get("id")
        return None if xid is None else self.ledger.find(self.exchange, str(xid))

    def last_fill_ms(self, symbol: str) -> int | None:
        """Time of the newest fill of `symbol` the session holds."""
        return self._last_fill.get(symbol)

    async def resolve_unknown(self, client_order_id: str) -> ManagedOrder:
        """Look an unknown order up with backoff; found, it takes the venue's state; absent, `rejected_unconfirmed`."""
        order = self.ledger.get(client_order_id)
        found = await self.calls.locate(order.symbol, client_order_id)
        if found is not None:
            await self.apply_snapshot(order, found)
            return order
        if order.status is OrderStatus.UNKNOWN:
            now = self.clock.now_ms()
            self._emit(
                self.ledger.transition(client_order_id, OrderStatus.REJECTED_UNCONFIRMED, now, "NOT_FOUND_AFTER_30S")
            )
            self.watch_until[client_order_id] = now + WATCH_MS
            await self._save(order)
        return order

    # --- the venue's word ---------------------------------------------------------------------------------------

    async def apply_snapshot(self, order: ManagedOrder, snap: Mapping[str, Any]) -> None:
        """Take what the venue shows of `order` (a ccxt unified order): its id, its fills, then its status."""
        now = self.clock.now_ms()
        xid = snap.get("id")
        changed = False
        if xid is not None and (order.exchange_order_id != str(xid) or order.status in _UNACKED):
            self._emit(self.ledger.acknowledge(order.client_order_id, str(xid), now))
            self.watch_until.pop(order.client_order_id, None)
            changed = True
            for event in self.ledger.adopt_orphans():  # fills that arrived before the order's id was known
                await self._booked(event)
        trades = snap.get("trades") or []
        if trades:
            # An order's own trades (binance's create response) name no order and often no time: they are its.
            when = snap.get("lastTradeTimestamp") or snap.get("timestamp")
            await self.apply_trades(
                {**t, "order": t.get("order") or xid, "clientOrderId": order.client_order_id,
                 "timestamp": t.get("timestamp") or when}
                for t in trades
            )  # fmt: skip
        filled = snap.get("filled")
        if isinstance(filled, int | float) and exact(filled, "filled") > order.filled_qty:
            # The venue shows more filled than the fills we hold: fetch the order's trades.
            await self._fetch_fills(order, snap)
        status = snap.get("status")
        if not order.status.is_final:
            if status == "canceled":
                self._emit(self.ledger.cancel(order.client_order_id, now, "canceled"))
                changed = True
            elif status == "expired":
                self._emit(self.ledger.expire(order.client_order_id, now))
                changed = True
            elif status == "rejected":
                self._emit(self.ledger.reject(order.client_order_id, now, "REJECTED_BY_EXCHANGE"))
                changed = True
            elif (
                status == "open"
                and order.status is OrderStatus.PENDING_CANCEL
                and order.client_order_id not in self._cancelling
            ):
                self._emit(self.ledger.cancel_refused(order.client_order_id, now))
                changed = True
        if changed:
            await self._save(order)

    async def _fetch_fills(self, order: ManagedOrder, snap: Mapping[str, Any]) -> int:
        since = snap.get("timestamp")
        trades = await self.calls.trades(order.symbol, int(since) - 1 if isinstance(since, int | float) else None)
        mine = [t for t in trades if str(t.get("order")) == order.exchange_order_id]
        return await self.apply_trades(mine)

    def fill_of(self, trade: Mapping[str, Any]) -> TradeFill:
        """A ccxt unified trade as a fill; its fee in whatever currency the venue charged."""
        fee = trade.get("fee") or {}
        return TradeFill(
            exchange=self.exchange,
            symbol=str(trade["symbol"]),
            trade_id=str(trade["id"]),
            qty=trade["amount"],
            price=trade["price"],
            timestamp=int(trade.get("timestamp") or self.clock.now_ms()),
            client_order_id=trade.get("clientOrderId"),
            exchange_order_id=None if trade.get("order") is None else str(trade["order"]),
            fee=paid_fee(self.exchange, trade),
            fee_currency=fee.get("currency"),
        )

    async def apply_trades(self, trades: Iterable[Mapping[str, Any]]) -> int:
        """Apply the venue's trades once each (other sessions' trades are ignored); returns how many were new."""
        applied = 0
        for trade in trades:
            try:
                fill = self.fill_of(trade)
            except (KeyError, TypeError, ValueError):
                log.warning("live %s: skipped a trade without id, symbol, amount or price", self.run_id)
                continue
            if fill.symbol not in self.portfolio.symbols:
                continue
            try:
                event = self.ledger.apply_fill(fill)
            except OverfillError as exc:
                log.error("live %s: %s", self.run_id, exc.message)
                continue
            if event is not None:
                await self._booked(event)
                applied += 1
        return applied

    async def fills_stored(self, timeout_s: float) -> None:
        """Wait until every fill the ledger applied is stored (a socket's fill may be on its way while a stop ends)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stored.wait(), timeout_s)

    async def _booked(self, event: OrderEvent) -> None:
        """Store a fill the ledger applied (with its order, in one transaction), book it, arm its brackets."""
        fill = event.fill
        assert fill is not None
        order = self.ledger.get(event.order_id)
        self._storing += 1
        self._stored.clear()
        try:
            recorded = await self.store.record_fill(self.run_id, self._token(), fill, order)
        finally:
            self._storing -= 1
            if self._storing == 0:
                self._stored.set()
        if not recorded:
            return  # stored already (another path brought it first): booked then, not again
        intent = self.intents.get(order.client_order_id)
        self.portfolio.book(order, fill, intent)
        self.last_prices.setdefault(fill.symbol, float(exact(fill.price, "price")))
        self._last_fill[fill.symbol] = max(self._last_fill.get(fill.symbol, 0), fill.timestamp)
        bracket = None if intent is None else Bracket.of(order, intent)
        if bracket is not None:
            self.brackets[order.client_order_id] = bracket
        self._emit(event)

    # --- cancels ------------------------------------------------------------------------------------------------

    async def cancel(self, client_order_id: str) -> ManagedOrder:
        """Cancel a working order: `pending_cancel`, then the venue's answer (a fill it met ends it `filled`)."""
        order = self.ledger.get(client_order_id)
        if not order.is_working:
            return order
        self._cancelling.add(client_order_id)
        try:
            self._emit(self.ledger.transition(client_order_id, OrderStatus.PENDING_CANCEL, self.clock.now_ms()))
            await self._save(order)
            failpoints.hit("live.cancel_stored")
            try:
                answer = await self.calls.cancel(order.symbol, client_order_id)
            except Exception as exc:  # any failure leaves it pending_cancel; a lookup settles it
                log.warning("live %s: cancel of %s failed: %s", self.run_id, client_order_id, exc)
                answer = None
            snap = answer if answer is not None and answer.get("status") else None
            if snap is None:
                snap = await self.calls.lookup(order.symbol, client_order_id)
        finally:
            self._cancelling.discard(client_order_id)
        if snap is not None:
            await self.apply_snapshot(order, snap)
            # Saved here whoever changed it: the user-data event often ends it first, and its write can still be in
            # flight when a stop closes the streams (it was lost then, leaving the row `pending_cancel`).
            await self._save(order)
        return order

    # --- capital ------------------------------------------------------------------------------------------------

    def locked_cash(self) -> float:
        """Quote held by working buys, unknown ones at full size, fees included."""
        total = 0.0
        for o in self.ledger.open_orders():
            if o.side != "buy":
                continue
            price = o.price if o.price is not None else self.last_prices.get(o.symbol, 0.0)
            rules = self.rules.get(o.symbol)
            fee = rules.taker_fee if rules is not None else 0.0
            remaining = float(exact(o.amount, "amount") - o.filled_qty)
            total += remaining * price * (1 + fee)
        return total

    def available_cash(self) -> float:
        """Capital not spent and not held by working orders."""
        return self.portfolio.cash - self.locked_cash()

    def available_position(self, symbol: str) -> float:
        """The position not already offered by working sells."""
        held = sum(
            float(exact(o.amount, "amount") - o.filled_qty) for o in self.ledger.open_orders(symbol) if o.side == "sell"
        )
        return self.portfolio.position(symbol) - held

    def busy(self, client_order_id: str) -> bool:
        """Whether a send or a cancel of this order is on its way here (its own task settles it)."""
        return client_order_id in self._placing or client_order_id in self._cancelling

    def unknown_orders(self) -> list[ManagedOrder]:
        """Orders whose outcome is not known yet."""
        return [o for o in self.ledger if o.status is OrderStatus.UNKNOWN]

    # --- brackets -----------------------------------------------------------------------------------------------

    def bracket_exits(self, symbol: str, low: float, high: float) -> list[OrderIntent]:
        """Exits the session's stop-loss and take-profit levels call for on a closed candle of `symbol`."""
        position = self.available_position(symbol)
        if position <= 0:
            if self.portfolio.position(symbol) <= 0:
                for key in [k for k, b in self.brackets.items() if b.symbol == symbol]:
                    del self.brackets[key]
            return []
        for bracket in self.brackets.values():
            if bracket.symbol != symbol:
                continue
            if bracket.stop_loss is not None and low <= bracket.stop_loss:
                return [OrderIntent(symbol, "sell", "market", position, intent="stop_loss")]
            if bracket.take_profit is not None and high >= bracket.take_profit:
                return [OrderIntent(symbol, "sell", "market", position, intent="take_profit")]
        return []

    # --- restoring ----------------------------------------------------------------------------------------------

    def restore(
        self, orders: Sequence[tuple[ManagedOrder, OrderIntent, int | None]], fills: Iterable[TradeFill]
    ) -> None:
        """Put back the stored orders (each with its fills counted in it) and remember the stored fills as applied.

        The portfolio is restored by its owner: the fills were booked into it when they happened.
        """
        for order, intent, watch in orders:
            self.ledger.load(order, ())
            self.intents[order.client_order_id] = intent
            if intent.bar_ms is not None and intent.intent == "signal":
                self._undecided.append(order.client_order_id)
            if watch is not None:
                self.watch_until[order.client_order_id] = watch
            self._sequence = max(self._sequence, _sequence_of(order.client_order_id) + 1)
            bracket = Bracket.of(order, intent)
            if bracket is not None:  # dropped by `bracket_exits` once the position is closed
                self.brackets[order.client_order_id] = bracket
        for fill in fills:
            self.ledger.load_fill(fill)
            self.last_prices[fill.symbol] = float(exact(fill.price, "price"))
            self._last_fill[fill.symbol] = max(self._last_fill.get(fill.symbol, 0), fill.timestamp)

    # --- plumbing -----------------------------------------------------------------------------------------------

    async def _save(self, order: ManagedOrder) -> None:
        await self.store.save_order(
            self.run_id, self._token(), order, watch_until=self.watch_until.get(order.client_order_id)
        )

    def _emit(self, event: OrderEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)


_LOCAL_CODES = {REASON_BELOW_MIN_AMOUNT: "BELOW_MIN_AMOUNT", REASON_BELOW_MIN_NOTIONAL: "BELOW_MIN_NOTIONAL"}
_UNACKED = frozenset({OrderStatus.SUBMITTED, OrderStatus.UNKNOWN, OrderStatus.REJECTED_UNCONFIRMED})


def _sequence_of(client_order_id: str) -> int:
    try:
        return parse_client_id(client_order_id).sequence
    except ClientIdError:
        return 0
