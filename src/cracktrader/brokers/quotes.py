"""The `quote` fill model of paper trading: orders fill against the exchange's best bid and ask.

A market order fills at the ask (buy) or bid (sell) plus slippage, a limit order that is marketable when it reaches
the exchange takes the opposite side, otherwise it rests and fills at its price once the opposite side trades
through it; stops trigger on the opposite side. An order placed at clock time T first sees the first quote at or
after T + latency. Matches are booked in the bar they happened in (when it closes, before the strategy decides),
by the simulator's one fill accounting, with the exchange rules.
"""

from __future__ import annotations

from collections.abc import Callable

from cracktrader.data.feeds.quotes import Quote
from cracktrader.engine.broker import EventSimulator, Order
from cracktrader.engine.fills import BUY, market_fill_price
from cracktrader.engine.records import TYPE_MARKET, TYPE_STOP, TYPE_STOP_LIMIT


class QuoteFills:
    """Matches a simulator's working orders against quotes; `apply` books the matches."""

    def __init__(self, sim: EventSimulator, latency_ms: int, now_ms: Callable[[], int]) -> None:
        self._sim = sim
        self._latency = max(0, int(latency_ms))
        self._now = now_ms
        self._index = {s: j for j, s in enumerate(sim.data.symbols)}
        self._due: dict[int, int] = {}  # order id -> the first quote time it may see
        self._arrived: set[int] = set()  # limit orders that have met a quote (later ones only fill resting)
        self._triggered: set[int] = set()  # stop-limits whose stop traded
        self._matched: set[int] = set()
        self.pending: list[tuple[Order, float, float]] = []  # (order, price, fee rate), in match order
        self.last: dict[str, Quote] = {}

    def admit(self) -> None:
        """Orders placed since the last call reach the exchange `latency_ms` from now."""
        due = self._now() + self._latency
        for o in self._sim.open_orders:
            self._due.setdefault(o.id, due)

    def on_quote(self, quote: Quote) -> None:
        """Match every working order of the quote's symbol that may see it."""
        j = self._index.get(quote.symbol)
        if j is None:
            return
        self.last[quote.symbol] = quote
        for o in self._sim.open_orders:
            if o.symbol != j or o.id in self._matched:
                continue
            due = self._due.get(o.id)
            if due is None or quote.timestamp < due:
                continue
            fill = self._match(o, quote)
            if fill is not None:
                self._matched.add(o.id)
                self.pending.append((o, *fill))

    def _match(self, o: Order, q: Quote) -> tuple[float, float] | None:
        """(price, fee rate) when the quote fills the order, else None."""
        maker, taker = self._sim.fee_rates(o.symbol)
        buy = o.side == BUY
        take = q.ask if buy else q.bid
        if o.type == TYPE_MARKET:
            return market_fill_price(o.side, take, self._sim.s.slippage), taker
        if o.type in (TYPE_STOP, TYPE_STOP_LIMIT) and o.id not in self._triggered:
            if not (take >= o.stop if buy else take <= o.stop):
                return None
            if o.type == TYPE_STOP:
                return market_fill_price(o.side, take, self._sim.s.slippage), taker
            self._triggered.add(o.id)  # now a limit order reaching the book
        if o.id not in self._arrived:
            self._arrived.add(o.id)
            marketable = take <= o.limit if buy else take >= o.limit
            return (take, taker) if marketable else None
        through = take < o.limit if buy else take > o.limit
        return (o.limit, maker) if through else None

    def apply(self, t: int) -> int:
        """Book the matches in bar t, in the order they happened; returns how many filled or were refused."""
        pending, self.pending = self.pending, []
        booked = sum(1 for o, price, rate in pending if self._sim.execute(o, t, price, rate))
        live = {o.id for o in self._sim.open_orders}
        for ids in (self._arrived, self._triggered, self._matched):
            ids.intersection_update(live)
        self._due = {k: v for k, v in self._due.items() if k in live}
        return booked
