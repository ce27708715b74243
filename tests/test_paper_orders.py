"""A paper session's orders go through the one order model: each change once, in seed 001's `orders` shape."""

from __future__ import annotations

from cracktrader.brokers.orders import CHANNEL_KEYS
from cracktrader.brokers.paper import PaperSession
from cracktrader.brokers.paper_orders import PaperOrders
from cracktrader.data.feeds.base import ClosedCandle
from cracktrader.data.timeframes import parse_timeframe
from cracktrader.engine.broker import SimSettings
from cracktrader.engine.context import Context
from cracktrader.engine.strategy import Strategy

H1 = parse_timeframe("1h")
T0 = 1_767_225_600_000
SYMBOLS = ("BTC/USDT",)


class Scripted(Strategy):
    """A resting limit that fills, a limit it cancels, a market buy, and a sell of more than it holds."""

    seen = 0

    def on_bar(self, ctx: Context) -> None:
        self.seen += 1  # a live window holds warmup() bars, so the bar count is the strategy's to keep
        n = self.seen
        if n == 1:
            ctx.buy(size=1.0, limit=95.0)  # bar 3 trades down to 94: fills at 95
            self.never = ctx.buy(size=1.0, limit=50.0)
        elif n == 2:
            ctx.buy(size=2.0)
        elif n == 4:
            ctx.cancel(self.never)
            ctx.sell(size=10.0)  # holds 3: refused


def _candle(price: float, low: float | None = None) -> ClosedCandle:
    return ClosedCandle(price, price + 1, price - 1 if low is None else low, price, 1.0)


def _run() -> tuple[PaperSession, PaperOrders, list[list[tuple[str, str]]]]:
    session = PaperSession(Scripted(), SYMBOLS, SimSettings(), H1.periods_per_year)
    orders = PaperOrders(SYMBOLS, quote="USDT")
    per_bar = []
    for k, candle in enumerate([_candle(100), _candle(100), _candle(96, low=94), _candle(97), _candle(98)]):
        session.on_bar(T0 + k * H1.ms, {"BTC/USDT": candle})
        sim = session.sim
        changes = orders.sync(sim.open_orders, sim.rows, sim.data.timestamp)
        per_bar.append([(e.order_id, str(e.status)) for e in changes])
    return session, orders, per_bar


def test_every_change_of_every_order_is_reported_once_in_state_machine_order() -> None:
    _, _, per_bar = _run()
    assert per_bar == [
        [("1", "pending_new"), ("1", "submitted"), ("1", "open"), ("2", "pending_new"), ("2", "submitted"),
         ("2", "open")],
        [("3", "pending_new"), ("3", "submitted")],
        [("3", "filled"), ("1", "filled")],  # the book's order: the market buy at the open, the limit inside
        [("2", "canceled"), ("4", "pending_new"), ("4", "submitted")],
        [("4", "rejected")],
    ]  # fmt: skip


def test_fills_are_booked_once_at_the_simulators_price_and_time() -> None:
    session, orders, _ = _run()
    first = orders.ledger.get("1")
    assert (first.filled, first.average_price, first.updated_at) == (1.0, 95.0, T0 + 2 * H1.ms)
    market = orders.ledger.get("3")
    assert (market.filled, market.average_price) == (2.0, 96.0)  # the open of the bar after the decision
    assert market.fees_paid == {"USDT": 2 * 96.0 * 0.001}
    assert orders.ledger.get("4").reason == "sell size exceeds position"
    # A second sync with nothing new reports nothing and books nothing twice.
    sim = session.sim
    assert orders.sync(sim.open_orders, sim.rows, sim.data.timestamp) == []
    assert orders.ledger.duplicate_fills == 0


def test_events_carry_the_seed_001_orders_message_keys() -> None:
    session = PaperSession(Scripted(), SYMBOLS, SimSettings(), H1.periods_per_year)
    orders = PaperOrders(SYMBOLS, quote="USDT")
    session.on_bar(T0, {"BTC/USDT": _candle(100)})
    event = orders.sync(session.sim.open_orders, session.sim.rows, session.sim.data.timestamp)[-1]
    assert tuple(event.to_channel()) == CHANNEL_KEYS
    assert event.to_channel() == {
        "order_id": "2", "status": "open", "symbol": "BTC/USDT", "side": "buy", "amount": 1.0, "price": 50.0,
        "timestamp": T0,
    }  # fmt: skip


class BuyEveryBar(Strategy):
    """A small market buy on every bar."""

    def on_bar(self, ctx: Context) -> None:
        ctx.buy(size=0.01)


def test_a_candle_delivered_long_after_its_close_is_seen_but_nothing_ordered_on_it_goes_out() -> None:
    from cracktrader.brokers.risk import RiskGate, RiskLimits
    from cracktrader.engine.records import O_REASON, O_STATUS, REASON_RISK_LIMIT, STATUS_REJECTED

    m1 = parse_timeframe("1m")
    now = [T0 + 10 * m1.ms]
    gate = RiskGate(RiskLimits(), lambda: now[0])
    session = PaperSession(BuyEveryBar(), SYMBOLS, SimSettings(), m1.periods_per_year, risk=gate, timeframe_ms=m1.ms)
    # Bars 0..8 arrive at once after a disconnect, 10 minutes after bar 0 opened.
    for k in range(9):
        session.on_bar(T0 + k * m1.ms, {"BTC/USDT": _candle(100)})
        stale = now[0] - (T0 + k * m1.ms + 2 * m1.ms) > 30_000
        assert ("STALE_DATA" in gate.condition.reasons) is stale, k
    rows = session.sim.rows
    refused = [int(r[0]) for r in rows if r[O_STATUS] == STATUS_REJECTED and r[O_REASON] == REASON_RISK_LIMIT]
    # Bars 0..7: the next candle is over a timeframe plus 30 s overdue (bar 7 closed 2 min ago). Bar 8 is fresh.
    assert refused == list(range(1, 9))
    assert [o.id for o in session.sim.open_orders] == [9]  # decided on the fresh candle: sent
    assert gate.condition.reasons == set() and gate.denials["STALE_DATA"] == 8
