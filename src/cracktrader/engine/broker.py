"""Event-driven simulator: a bar loop calling `on_bar`, with market, limit, stop and stop-limit orders.

`BarContext` is the backtest's implementation of the `Context` protocol strategies see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cracktrader.engine.accounting import CLOSE_TOLERANCE, N_BOOK, apply_fill, spot_refusal
from cracktrader.engine.context import Fill, OrderKind, OrderUpdate, OrderView
from cracktrader.engine.fills import (
    BUY,
    SELL,
    all_in_quantity,
    limit_fill_price,
    limit_is_taker,
    market_fill_price,
    stop_fill_price,
)
from cracktrader.engine.market import Bars, MarketData
from cracktrader.engine.records import (
    N_COLS,
    REASON_CANCELED_BY_STRATEGY,
    REASON_FUNDS_LOCKED,
    REASON_INSUFFICIENT_CASH,
    REASON_INSUFFICIENT_POSITION,
    REASON_NAMES,
    REASON_NO_POSITION,
    REASON_OCO,
    REASON_SIGNAL,
    REASON_STOP_LOSS,
    REASON_TAKE_PROFIT,
    STATUS_CANCELED,
    STATUS_FILLED,
    STATUS_OPEN,
    STATUS_REJECTED,
    TYPE_LIMIT,
    TYPE_MARKET,
    TYPE_NAMES,
    TYPE_STOP,
    TYPE_STOP_LIMIT,
)
from cracktrader.engine.rules import MarketRules, amount_to_precision, minimum_refusal, price_to_precision
from cracktrader.errors import UserInputError

Event = Fill | OrderUpdate
_LIST_DTYPES = (np.dtype(np.bool_), np.dtype(np.int8))
_STATE_NAMES = {STATUS_REJECTED: "rejected", STATUS_CANCELED: "cancelled"}
_KIND: tuple[OrderKind, ...] = TYPE_NAMES


@dataclass(frozen=True, slots=True)
class SimSettings:
    """Costs and rules of a simulation."""

    initial_cash: float = 10_000.0
    maker_fee: float = 0.001
    taker_fee: float = 0.001
    slippage: float = 0.0  # fraction, e.g. 5 bps = 0.0005
    latency: int = 1  # bars between a decision at a close and its fill at an open
    allow_short: bool = False
    # Exchange rules per symbol (fees, precision, minimums, locked funds); None: the plain simulation.
    rules: tuple[MarketRules, ...] | None = None

    def __post_init__(self) -> None:
        # Integers from JSON or the CLI would otherwise make the compiled kernel do integer cash arithmetic.
        for name in ("initial_cash", "maker_fee", "taker_fee", "slippage"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if min(self.maker_fee, self.taker_fee, self.slippage) < 0:
            raise UserInputError("fees and slippage must not be negative")


@dataclass(frozen=True, slots=True)
class OrderDecision:
    """One order entry (side +1/-1) or cancel (side 0, `size` = the order id) a strategy made at bar `bar`."""

    bar: int
    symbol: int
    side: int
    size: float | None
    limit: float | None = None
    stop: float | None = None
    stop_loss: float | None = None
    take_profit: float | None = None
    fraction: float = 1.0


@dataclass(slots=True, eq=False)
class Order:
    """A working order of the event-driven simulator."""

    id: int
    symbol: int
    side: int
    size: float | None  # None: all-in for an opening buy, the whole position for a sell
    type: int
    limit: float
    stop: float
    created: int
    active_from: int
    stop_loss: float = math.nan
    take_profit: float = math.nan
    reason: int = REASON_SIGNAL
    oco: int = 0
    triggered: bool = False
    fraction: float = 1.0  # share of cash an all-in (size=None) opening order uses
    children: list[int] = field(default_factory=list)

    @property
    def trigger(self) -> float:
        """The price its record shows: the limit (limit, stop-limit), else the stop (NaN for market orders)."""
        return self.limit if self.type in (TYPE_LIMIT, TYPE_STOP_LIMIT) else self.stop


class EventSimulator:
    """Runs an event-driven strategy bar by bar over aligned market data."""

    def __init__(self, data: MarketData, settings: SimSettings, *, events: bool = False) -> None:
        self.data = data
        self.s = settings
        m = len(data.symbols)
        self._rules = settings.rules
        if self._rules is not None and len(self._rules) != m:
            raise UserInputError(f"exchange rules for {len(self._rules)} markets, but {m} symbols")
        # Fee rates per symbol: the market's with exchange rules, else the run's.
        self._maker = [r.maker_fee for r in self._rules] if self._rules else [settings.maker_fee] * m
        self._taker = [r.taker_fee for r in self._rules] if self._rules else [settings.taker_fee] * m
        self.cash = settings.initial_cash
        self.book = np.zeros((m, N_BOOK))
        self.pos = [0.0] * m  # mirror of book[:, B_POS] as floats: marking every bar reads it
        # Fills and order state changes for `on_fill` / `on_order`, delivered before the next `on_bar`.
        self.events: list[Event] | None = [] if events else None
        # The strategy's order entries and cancels, kept only when `cracktrader check` compares them.
        self.decisions: list[OrderDecision] | None = None
        self.open_orders: list[Order] = []
        self.rows: list[list[float]] = []
        self.recent_fills: list[list[float]] = []
        self._next_id = 1
        self._cols = {
            k: [np.ascontiguousarray(getattr(data, k)[:, j]) for j in range(m)]
            for k in ("open", "high", "low", "close")
        }
        self._tradable = [data.tradable[:, j] for j in range(m)]
        self._marked_cash: list[float] = []  # cash at each close since the last `flush_marks`
        self._position_log: list[tuple[int, list[float]]] = []  # (bar, positions after a fill there)
        self._held_at_flush = [0.0] * m
        n = data.n_bars
        self.equity = np.empty(n)
        self.cash_curve = np.empty(n)
        self.in_market = np.zeros(n, dtype=np.bool_)
        self._buffers: dict[str, np.ndarray] | None = None  # capacity arrays of a simulator fed bar by bar

    @classmethod
    def live(
        cls,
        symbols: tuple[str, ...],
        settings: SimSettings,
        periods_per_year: float,
        *,
        events: bool = False,
        capacity: int = 1024,
    ) -> EventSimulator:
        """A simulator with no bars yet, fed closed bars one at a time by `append_bar` (paper trading)."""
        sim = cls(_empty_market(symbols, periods_per_year), settings, events=events)
        sim._allocate(capacity)
        return sim

    def append_bar(
        self,
        timestamp: int,
        open_: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        volume: np.ndarray,
        tradable: np.ndarray,
    ) -> int:
        """Add the next closed bar (one value per symbol); returns its index. Amortised O(symbols)."""
        if self._buffers is None:
            raise RuntimeError("append_bar needs a simulator made by EventSimulator.live")
        t = self.data.n_bars
        if t >= self._buffers["timestamp"].shape[0]:
            self._allocate(2 * t)
        buf = self._buffers
        buf["timestamp"][t] = timestamp
        for key, values in (("open", open_), ("high", high), ("low", low), ("close", close), ("volume", volume)):
            buf[key][t] = values
        buf["tradable"][t] = tradable
        self._view(t + 1)
        return t

    def _allocate(self, capacity: int) -> None:
        """(Re)allocate capacity arrays, keeping the bars so far; columns are contiguous per symbol (order F)."""
        n, m = self.data.n_bars, len(self.data.symbols)
        old = self._buffers
        new: dict[str, np.ndarray] = {"timestamp": np.zeros(capacity, dtype=np.int64)}
        for key in ("open", "high", "low", "close", "volume"):
            new[key] = np.zeros((capacity, m), order="F")
        new["tradable"] = np.zeros((capacity, m), dtype=np.bool_, order="F")
        for key in ("equity", "cash_curve"):
            new[key] = np.zeros(capacity)
        new["in_market"] = np.zeros(capacity, dtype=np.bool_)
        if old is not None:
            for key, arr in new.items():
                arr[:n] = old[key][:n]
        self._buffers = new
        self.equity, self.cash_curve, self.in_market = new["equity"], new["cash_curve"], new["in_market"]
        self._cols = {k: [new[k][:, j] for j in range(m)] for k in ("open", "high", "low", "close")}
        self._tradable = [new["tradable"][:, j] for j in range(m)]
        self._view(n)

    def _view(self, n: int) -> None:
        buf = self._buffers
        assert buf is not None
        d = self.data
        self.data = MarketData(
            d.symbols,
            buf["timestamp"][:n],
            buf["open"][:n],
            buf["high"][:n],
            buf["low"][:n],
            buf["close"][:n],
            buf["volume"][:n],
            buf["tradable"][:n],
            d.periods_per_year,
        )

    # Order entry ---------------------------------------------------------------------------------
    def submit(
        self,
        t: int,
        symbol: int,
        side: int,
        size: float | None,
        *,
        limit: float | None = None,
        stop: float | None = None,
        stop_loss: float | None = None,
        take_profit: float | None = None,
        fraction: float = 1.0,
    ) -> int:
        """Queue an order decided at bar t; it can fill from bar t + latency."""
        if size is not None and (not math.isfinite(size) or size < 0):
            raise UserInputError(f"Order size must be a positive number or None (all in), got {size!r}")
        if not 0.0 < fraction <= 1.0:
            raise UserInputError(f"Order fraction must be in (0, 1], got {fraction!r}")
        otype = TYPE_MARKET
        if limit is not None and stop is not None:
            otype = TYPE_STOP_LIMIT
        elif limit is not None:
            otype = TYPE_LIMIT
        elif stop is not None:
            otype = TYPE_STOP
        order = Order(
            self._next_id,
            symbol,
            side,
            size,
            otype,
            math.nan if limit is None else float(limit),
            math.nan if stop is None else float(stop),
            t,
            t + self.s.latency,
            math.nan if stop_loss is None else float(stop_loss),
            math.nan if take_profit is None else float(take_profit),
            fraction=fraction,
        )
        self._next_id += 1
        if self.decisions is not None:
            self.decisions.append(OrderDecision(t, symbol, side, size, limit, stop, stop_loss, take_profit, fraction))
        refused = self._entry_refusal(order, t) if self._rules is not None else None
        if refused is not None:
            # Refused locally, as the exchange would refuse it: recorded, never in the book.
            self._record(order, t, STATUS_REJECTED, order.size or 0.0, math.nan, 0.0, math.nan, math.nan, refused)
            return order.id
        self.open_orders.append(order)
        if self.events is not None:
            self._update(order, t, "accepted", REASON_SIGNAL)
        return order.id

    def _entry_refusal(self, order: Order, t: int) -> int | None:
        """Put an order on the market's grids; why the exchange would refuse it at entry, else None.

        An all-in order's amount is known only when it fills; a market order's cost is checked then too.
        """
        assert self._rules is not None
        r = self._rules[order.symbol]
        if order.limit == order.limit:
            order.limit = price_to_precision(r, order.limit)
        if order.stop == order.stop:
            order.stop = price_to_precision(r, order.stop)
        if order.size is None or order.size == 0:
            return None
        order.size = amount_to_precision(r, order.size)
        if order.limit == order.limit:
            ref = order.limit
        elif order.stop == order.stop:
            ref = order.stop
        else:
            ref = float(self._cols["close"][order.symbol][t])
        refused = minimum_refusal(r, order.size, ref)
        if refused is not None or order.type == TYPE_MARKET:
            return refused
        return self._balance_refusal(order, order.size, ref, self._taker[order.symbol])

    def _balance_refusal(self, order: Order, qty: float, price: float, rate: float) -> int | None:
        """Why the free balance (what other open orders do not hold) cannot pay for `qty` at `price`."""
        j = order.symbol
        p = self.pos[j]
        if order.side == BUY:
            if p < 0:
                return None  # buying back a short: no spot balance is spent
            need = qty * price * (1 + rate)
            if need <= (self.cash - self.locked_quote(exclude=order)) * (1 + CLOSE_TOLERANCE):
                return None
            return REASON_FUNDS_LOCKED if need <= self.cash * (1 + CLOSE_TOLERANCE) else REASON_INSUFFICIENT_CASH
        if self.s.allow_short:
            return None
        if qty <= (p - self.locked_base(j, exclude=order)) * (1 + CLOSE_TOLERANCE):
            return None
        if qty <= p * (1 + CLOSE_TOLERANCE):
            return REASON_FUNDS_LOCKED
        return REASON_NO_POSITION if p <= 0 else REASON_INSUFFICIENT_POSITION

    def locked_quote(self, exclude: Order | None = None) -> float:
        """Cash that open buy orders hold (exchange rules): size x limit (or stop) price x (1 + taker fee).

        Market orders fill at the next price and hold nothing; an all-in order's size is known only then.
        """
        held = 0.0
        for o in self.open_orders:
            if o is exclude or o.side != BUY or o.size is None or o.type == TYPE_MARKET or self.pos[o.symbol] < 0:
                continue
            price = o.stop if o.type == TYPE_STOP else o.limit
            held += o.size * price * (1 + self._taker[o.symbol])
        return held

    def locked_base(self, j: int, exclude: Order | None = None) -> float:
        """Units of symbol j that open sell orders of a known size hold (exchange rules)."""
        return sum(
            o.size
            for o in self.open_orders
            if o is not exclude and o.symbol == j and o.side == SELL and o.size is not None and o.type != TYPE_MARKET
        )

    def reject_now(self, t: int, symbol: int, side: int, size: float | None, reason: int) -> int:
        """Record an order refused before it reached the book (a risk limit); returns its id."""
        order = Order(self._next_id, symbol, side, size, TYPE_MARKET, math.nan, math.nan, t, t, reason=reason)
        self._next_id += 1
        self._record(order, t, STATUS_REJECTED, 0.0, math.nan, 0.0, math.nan, math.nan, reason)
        return order.id

    def take_id(self) -> int:
        """A fresh order id (a live session numbers its venue orders from the same sequence as its refusals)."""
        order_id = self._next_id
        self._next_id += 1
        return order_id

    def reserve_ids(self, above: int) -> None:
        """Never hand out an id at or below `above` again (ids already used by a restored session's orders)."""
        self._next_id = max(self._next_id, above + 1)

    def book_venue_fill(
        self, t: int, order_id: int, symbol: int, side: int, qty: float, price: float, fee: float, otype: int,
        reason: int,
    ) -> None:  # fmt: skip
        """Book a fill the venue executed (live trading) in bar t, through the one fill accounting.

        `fee` is the fee in the quote currency the venue charged for it; the fill is recorded as a filled order
        row, as a simulated one is, and reaches `on_fill` the same way.
        """
        rate = fee / (qty * price) if qty > 0 and price > 0 else 0.0
        order = Order(order_id, symbol, side, qty, otype, math.nan, math.nan, t, t, reason=reason)
        self.cash, qty, fee, pnl, ret, _ = apply_fill(self.book, symbol, self.cash, side, qty, price, rate)
        self.pos[symbol] = float(self.book[symbol, 0])
        self._position_log.append((t, list(self.pos)))
        self._record(order, t, STATUS_FILLED, qty, price, fee, pnl, ret, reason)

    def close_now(self, t: int, symbol: int, price: float) -> None:
        """Close a position at `price` at once, at the taker rate (a session flattened when it stops)."""
        p = self.pos[symbol]
        if p == 0.0:
            return
        order_id = self.submit(t, symbol, SELL if p > 0 else BUY, abs(p))
        if self._is_open_id(order_id):
            self._execute(self._order(order_id), t, price, self._taker[symbol])

    def _is_open_id(self, order_id: int) -> bool:
        return any(o.id == order_id for o in self.open_orders)

    def execute(self, order: Order, t: int, price: float, rate: float) -> bool:
        """Fill a working order at `price` in bar t, as another fill model decided (paper's quotes); False if gone."""
        if not self._is_open(order):
            return False
        self._execute(order, t, price, rate)
        return True

    def fee_rates(self, j: int) -> tuple[float, float]:
        """(maker, taker) of symbol j."""
        return self._maker[j], self._taker[j]

    def cancel(self, t: int, order_id: int, reason: int = REASON_CANCELED_BY_STRATEGY) -> bool:
        """Cancel a working order; False when it is no longer open."""
        for k, o in enumerate(self.open_orders):
            if o.id == order_id:
                del self.open_orders[k]
                self._record(o, t, STATUS_CANCELED, 0.0, math.nan, 0.0, math.nan, math.nan, reason)
                return True
        return False

    # Bar processing ------------------------------------------------------------------------------
    def process_bar(self, t: int) -> None:
        """Fill what the bar allows: the strategy's orders at the open, then inside the bar with brackets.

        At the open, orders that reduce a position go before those that open one. Protective brackets
        (stop_loss / take_profit) are then checked symbol by symbol, stop first, as the compiled kernel does:
        a gap through a stop fills at the open but cannot fund an entry at that open, and cash sums in the
        same order in both simulators.
        """
        due = [o for o in self.open_orders if o.active_from <= t and self._tradable[o.symbol][t]]
        if not due:
            return
        due.sort(key=lambda o: (0 if self._reduces(o) else 1, o.symbol, o.id))
        intrabar: list[Order] = []
        for o in due:
            if o.reason != REASON_SIGNAL or (self._is_open(o) and not self._try_fill(o, t, at_open=True)):
                intrabar.append(o)
        # Children created at the open (brackets of entries) can trigger later in the same bar.
        seen = {id(o) for o in intrabar}
        intrabar += [
            o for o in self.open_orders if o.active_from == t and o.reason != REASON_SIGNAL and id(o) not in seen
        ]
        # Stops before limits: the pessimistic order when a bar touches both.
        intrabar.sort(key=lambda o: (o.symbol, 0 if o.type == TYPE_STOP else 1, o.id))
        for o in intrabar:
            if self._is_open(o):
                self._try_fill(o, t, at_open=False)

    def _is_open(self, order: Order) -> bool:
        return any(o is order for o in self.open_orders)

    def _reduces(self, o: Order) -> bool:
        p = self.pos[o.symbol]
        return (p > 0 and o.side == SELL) or (p < 0 and o.side == BUY)

    def _try_fill(self, o: Order, t: int, *, at_open: bool) -> bool:
        """Fill `o` in bar t if the price allows; returns True when the order left the book."""
        j = o.symbol
        op = self._cols["open"][j][t]
        hi = self._cols["high"][j][t]
        lo = self._cols["low"][j][t]
        slip = self.s.slippage
        rate = self._taker[j]
        if o.type == TYPE_MARKET:
            price = market_fill_price(o.side, op, slip)
        elif o.type == TYPE_LIMIT:
            if at_open and not limit_is_taker(o.side, op, o.limit):
                return False
            price = limit_fill_price(o.side, op, hi, lo, o.limit)
            # Marketable at the open (a gap through the limit) takes liquidity; resting in the book makes it.
            rate = self._taker[j] if limit_is_taker(o.side, op, o.limit) else self._maker[j]
        elif o.type == TYPE_STOP:
            crossed = op >= o.stop if o.side == BUY else op <= o.stop
            if at_open and not crossed:
                return False
            price = stop_fill_price(o.side, op, hi, lo, o.stop, slip)
        else:
            price = self._stop_limit_price(o, op, hi, lo, at_open=at_open)
            rate = self._taker[j] if at_open else self._maker[j]
        if price != price:  # NaN: not reached in this bar
            return False
        self._execute(o, t, price, rate)
        return True

    def _stop_limit_price(self, o: Order, op: float, hi: float, lo: float, *, at_open: bool) -> float:
        """A stop-limit becomes a limit once the stop trades; it fills only at the limit or better."""
        if not o.triggered:
            if at_open:
                o.triggered = op >= o.stop if o.side == BUY else op <= o.stop
                return op if o.triggered and limit_is_taker(o.side, op, o.limit) else math.nan
            if (o.side == BUY and hi >= o.stop) or (o.side == SELL and lo <= o.stop):
                o.triggered = True
                # The stop price itself traded; it fills there if that is within the limit.
                within = o.stop <= o.limit if o.side == BUY else o.stop >= o.limit
                return o.stop if within else math.nan
            return math.nan
        if at_open:
            return op if limit_is_taker(o.side, op, o.limit) else math.nan
        return limit_fill_price(o.side, op, hi, lo, o.limit)

    def _execute(self, o: Order, t: int, price: float, rate: float) -> None:
        """Apply a fill to cash and position, or reject it with a reason."""
        self.open_orders.remove(o)
        j = o.symbol
        p = self.pos[j]
        rules = self._rules[j] if self._rules is not None else None
        if rules is not None:
            price = price_to_precision(rules, price)
        if o.size is None:
            if p != 0 and ((p > 0) == (o.side == SELL)):
                qty = abs(p)
            elif o.side == BUY or self.s.allow_short:
                cash = self.cash if rules is None else self.cash - self.locked_quote()
                qty = all_in_quantity(cash * o.fraction, price, rate)
                if rules is not None:
                    qty = amount_to_precision(rules, qty)
            else:
                qty = 0.0
        else:
            qty = o.size
        reject = spot_refusal(
            side=o.side,
            position=p,
            qty=qty,
            price=price,
            fee_rate=rate,
            cash=self.cash,
            allow_short=self.s.allow_short,
            asked_zero=o.size == 0,
        )
        if reject is None and rules is not None:
            # An order of a known size passed the minimums at entry; an all-in or whole-position one is sized now.
            reject = minimum_refusal(rules, qty, price) if o.size is None else None
            if reject is None:
                reject = self._balance_refusal(o, qty, price, rate)
        if reject is not None:
            self._record(o, t, STATUS_REJECTED, qty, price, 0.0, math.nan, math.nan, reject)
            return
        self.cash, qty, fee, pnl, ret, opening = apply_fill(self.book, j, self.cash, o.side, qty, price, rate)
        self.pos[j] = float(self.book[j, 0])
        self._position_log.append((t, list(self.pos)))
        self._record(o, t, STATUS_FILLED, qty, price, fee, pnl, ret, o.reason)
        self._after_fill(o, t, price, opening)

    def _after_fill(self, o: Order, t: int, price: float, opened: float) -> None:
        """Cancel the other leg of a filled bracket, or attach brackets to a filled entry."""
        j = o.symbol
        if o.oco:
            self.cancel(t, o.oco, REASON_OCO)
        if self.pos[j] == 0.0:
            for other in [x for x in self.open_orders if x.symbol == j and x.reason != REASON_SIGNAL]:
                self.cancel(t, other.id, REASON_OCO)
            return
        if opened <= 0 or (o.stop_loss != o.stop_loss and o.take_profit != o.take_profit):
            return
        side = -o.side
        sl_id = tp_id = 0
        if o.stop_loss == o.stop_loss:
            sl_id = self._child(j, side, TYPE_STOP, math.nan, price * (1 - o.side * o.stop_loss), t, REASON_STOP_LOSS)
        if o.take_profit == o.take_profit:
            tp_id = self._child(
                j, side, TYPE_LIMIT, price * (1 + o.side * o.take_profit), math.nan, t, REASON_TAKE_PROFIT
            )
        if sl_id and tp_id:
            self._order(sl_id).oco = tp_id
            self._order(tp_id).oco = sl_id

    def _child(self, j: int, side: int, otype: int, limit: float, stop: float, t: int, reason: int) -> int:
        if self._rules is not None:  # brackets rest on the exchange: their prices are on its grid
            limit, stop = price_to_precision(self._rules[j], limit), price_to_precision(self._rules[j], stop)
        child = Order(self._next_id, j, side, None, otype, limit, stop, t, t, reason=reason)
        self._next_id += 1
        self.open_orders.append(child)
        return child.id

    def _order(self, order_id: int) -> Order:
        return next(o for o in self.open_orders if o.id == order_id)

    def _record(
        self,
        o: Order,
        t: int,
        status: int,
        qty: float,
        price: float,
        fee: float,
        pnl: float,
        ret: float,
        reason: int,
    ) -> None:
        if self.events is not None:
            if status == STATUS_FILLED:
                self.events.append(
                    Fill(
                        o.id,
                        self.data.symbols[o.symbol],
                        "buy" if o.side == BUY else "sell",
                        qty,
                        price,
                        fee,
                        int(self.data.timestamp[t]),
                        REASON_NAMES[o.reason],
                    )
                )
            self._update(o, t, "filled" if status == STATUS_FILLED else _STATE_NAMES[status], reason)
        trigger = o.trigger
        row = [
            float(o.id),
            float(o.created),
            float(t),
            float(o.symbol),
            float(o.side),
            float(o.type),
            float(status),
            qty,
            price,
            fee,
            pnl,
            ret,
            float(reason),
            trigger,
        ]
        self.rows.append(row)

    def _update(self, o: Order, t: int, state: str, reason: int) -> None:
        assert self.events is not None
        self.events.append(
            OrderUpdate(
                o.id,
                self.data.symbols[o.symbol],
                "buy" if o.side == BUY else "sell",
                _KIND[o.type],
                state,  # type: ignore[arg-type]
                REASON_NAMES[reason],
                int(self.data.timestamp[t]),
            )
        )

    # Results ---------------------------------------------------------------------------------------
    def mark(self, t: int) -> None:
        """Value the portfolio at bar t's close: the cash now; positions are valued in `flush_marks`."""
        self._marked_cash.append(self.cash)

    def flush_marks(self, start: int) -> None:
        """Value the bars marked since bar `start` (cash plus positions at each close) in one numpy pass.

        Per-bar numpy item reads and writes were most of the event loop's own time; positions change only on
        fills, so they are replayed here from the fills' log.
        """
        stop = start + len(self._marked_cash)
        if stop == start:
            return
        if stop == start + 1:
            self._flush_one(start)
            return
        cash = np.asarray(self._marked_cash)
        self.cash_curve[start:stop] = cash
        self._marked_cash.clear()
        held = np.empty((stop - start, len(self.pos)))
        held[:] = self._held_at_flush
        for bar, positions in self._position_log:
            held[bar - start :] = positions
        self._position_log.clear()
        self._held_at_flush = list(self.pos)
        if not held.any():
            self.equity[start:stop] = cash
            self.in_market[start:stop] = False
            return
        value = cash.copy()
        for j in range(held.shape[1]):  # symbol by symbol, the order the kernel adds them in
            if held[:, j].any():
                value += held[:, j] * self._cols["close"][j][start:stop]
        self.equity[start:stop] = value
        self.in_market[start:stop] = (held != 0.0).any(axis=1)

    def _flush_one(self, t: int) -> None:
        """`flush_marks` of one bar, in floats: the same additions in the same order, so the same values."""
        # A live session flushes each bar; numpy's pass over one-row arrays cost its 10-symbol bar ~70 us.
        cash = self._marked_cash[0]
        self._marked_cash.clear()
        held = self._held_at_flush
        for bar, positions in self._position_log:
            if bar <= t:  # as `held[bar - start:] = positions` does for one row
                held = positions
        self._position_log.clear()
        self._held_at_flush = list(self.pos)
        value, in_market = cash, False
        closes = self._cols["close"]
        for j, h in enumerate(held):
            if h != 0.0:  # NaN too, as numpy's `any` counts it
                value += h * float(closes[j][t])
                in_market = True
        self.cash_curve[t] = cash
        self.equity[t] = value
        self.in_market[t] = in_market

    def order_records(self, last_bar: int) -> np.ndarray:
        """All order rows, with still-working orders appended as open; sorted by order id."""
        rows = list(self.rows)
        for o in self.open_orders:
            trigger = o.trigger
            rows.append(
                [
                    float(o.id),
                    float(o.created),
                    -1.0,
                    float(o.symbol),
                    float(o.side),
                    float(o.type),
                    float(STATUS_OPEN),
                    o.size if o.size is not None else math.nan,
                    math.nan,
                    0.0,
                    math.nan,
                    math.nan,
                    float(o.reason),
                    trigger,
                ]
            )
        out = np.asarray(rows, dtype=np.float64).reshape(-1, N_COLS)
        return out[np.argsort(out[:, 0], kind="stable")]


class BarContext:
    """The backtest's `Context`: history up to the current bar, the portfolio, and order entry.

    `i` (the absolute bar index) is an implementation detail of backtests: live runtimes have no such number,
    so strategies must not use it.
    """

    __slots__ = ("_index", "_missing", "_series", "_sim", "_single", "i", "symbols")

    def __init__(self, sim: EventSimulator, indicators: list[dict[str, np.ndarray]] | None = None) -> None:
        self._sim = sim
        self.symbols: tuple[str, ...] = sim.data.symbols
        self._index = {s: k for k, s in enumerate(self.symbols)}
        self._single = len(self.symbols) == 1
        ind = indicators or [{} for _ in self.symbols]
        # Boolean and int8 series as lists: indexing a list is several times faster than a numpy scalar, and
        # their items are cached singletons (8 bytes a bar). Float series stay arrays (a list: 32 B a bar).
        self._series: dict[str | None, dict[str, Any]] = {
            s: {k: (v.tolist() if v.dtype in _LIST_DTYPES else v) for k, v in ind[j].items()}
            for j, s in enumerate(self.symbols)
        }
        if self._single:
            self._series[None] = self._series[self.symbols[0]]
        self._missing = {k: missing_value(v) for by_name in ind for k, v in by_name.items()}
        self.i = 0

    def _j(self, symbol: str | None) -> int:
        if symbol is None:
            if self._single:
                return 0
            raise UserInputError(
                f"This run trades {len(self.symbols)} symbols {list(self.symbols)}: name the symbol "
                "(for example ctx.buy(symbol), ctx.position(symbol)); loop over ctx.symbols to trade each"
            )
        try:
            return self._index[symbol]
        except KeyError:
            raise UserInputError(f"Unknown symbol {symbol!r}; this run trades {list(self.symbols)}") from None

    @property
    def timestamp(self) -> int:
        """Open time (ms) of the current bar."""
        return int(self._sim.data.timestamp[self.i])

    @property
    def cash(self) -> float:
        return self._sim.cash

    @property
    def value(self) -> float:
        """Cash plus positions at the current close."""
        sim = self._sim
        return sim.cash + sum(p * sim._cols["close"][j][self.i] for j, p in enumerate(sim.pos) if p)

    def bars(self, symbol: str | None = None) -> Bars:
        """History of one symbol up to and including the current bar (views, no copies)."""
        return self._sim.data.bars(self._j(symbol)).head(self.i + 1)

    def indicator(self, name: str, symbol: str | None = None, ago: int = 0) -> float:
        """The strategy's indicator `name` at `ago` bars before the current one (computed once per run)."""
        try:
            series = self._series[symbol][name]  # the hot path: a named symbol and a known indicator
        except KeyError:
            series = self._lookup(name, symbol)
        k = self.i - ago
        if k < 0 or ago < 0:
            return self._missing[name]
        return series[k]

    def _lookup(self, name: str, symbol: str | None) -> Any:
        by_name = self._series[self.symbols[self._j(symbol)]]
        if name not in by_name:
            raise UserInputError(f"Unknown indicator {name!r}; the strategy's indicators() returns {sorted(by_name)}")
        return by_name[name]

    def price(self, symbol: str | None = None) -> float:
        """The current bar's close."""
        return float(self._sim._cols["close"][self._j(symbol)][self.i])

    def position(self, symbol: str | None = None) -> float:
        """Signed position size (negative when short)."""
        return self._sim.pos[self._j(symbol)]

    def buy(
        self,
        symbol: str | None = None,
        size: float | None = None,
        *,
        limit: float | None = None,
        stop: float | None = None,
        stop_loss: float | None = None,
        take_profit: float | None = None,
        fraction: float = 1.0,
    ) -> int:
        """Buy `size` units (None: all available cash, fee included); returns the order id."""
        return self._sim.submit(
            self.i,
            self._j(symbol),
            BUY,
            size,
            limit=limit,
            stop=stop,
            stop_loss=stop_loss,
            take_profit=take_profit,
            fraction=fraction,
        )

    def sell(
        self,
        symbol: str | None = None,
        size: float | None = None,
        *,
        limit: float | None = None,
        stop: float | None = None,
        stop_loss: float | None = None,
        take_profit: float | None = None,
        fraction: float = 1.0,
    ) -> int:
        """Sell `size` units (None: the whole position, or all in short when shorting is on)."""
        return self._sim.submit(
            self.i,
            self._j(symbol),
            SELL,
            size,
            limit=limit,
            stop=stop,
            stop_loss=stop_loss,
            take_profit=take_profit,
            fraction=fraction,
        )

    def close_position(self, symbol: str | None = None) -> int | None:
        """Market order that flattens the symbol's position; None when flat."""
        j = self._j(symbol)
        p = self._sim.pos[j]
        if p == 0.0:
            return None
        return self._sim.submit(self.i, j, SELL if p > 0 else BUY, abs(p))

    def cancel(self, order_id: int) -> bool:
        """Cancel a working order."""
        sim = self._sim
        if sim.decisions is not None:
            sim.decisions.append(OrderDecision(self.i, -1, 0, float(order_id)))
        return sim.cancel(self.i, order_id)

    def open_orders(self, symbol: str | None = None) -> list[OrderView]:
        """Working orders, optionally of one symbol."""
        orders = self._sim.open_orders
        if symbol is not None:
            j = self._j(symbol)
            orders = [o for o in orders if o.symbol == j]
        return [self._view(o) for o in orders]

    def _view(self, o: Order) -> OrderView:
        return OrderView(
            o.id,
            self.symbols[o.symbol],
            "buy" if o.side == BUY else "sell",
            _KIND[o.type],
            o.size,
            None if o.limit != o.limit else o.limit,
            None if o.stop != o.stop else o.stop,
            REASON_NAMES[o.reason],
        )


def _empty_market(symbols: tuple[str, ...], periods_per_year: float) -> MarketData:
    m = len(symbols)
    prices = np.zeros((0, m))
    return MarketData(
        symbols, np.zeros(0, dtype=np.int64), prices, prices, prices, prices, prices,
        np.zeros((0, m), dtype=np.bool_), periods_per_year,
    )  # fmt: skip


def missing_value(series: np.ndarray) -> float:
    """What an indicator reads before its history starts: False for boolean, 0 for integer series, else NaN."""
    if series.dtype == np.bool_:
        return False
    return 0 if np.issubdtype(series.dtype, np.integer) else math.nan
