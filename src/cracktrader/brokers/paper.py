"""Paper trading: the backtest's matching engine (`EventSimulator`) fed closed candles as they arrive.

A session sees the live window (`engine.window`), places orders through the same `Context`, and is filled by the
same rules and the same accounting as a backtest; over replayed candles it reproduces the backtest exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, astuple, dataclass
from typing import Any

import numpy as np

from cracktrader.brokers.quotes import QuoteFills
from cracktrader.brokers.risk import STALE_AFTER_MS, Exposure, RiskDenial, RiskGate
from cracktrader.data.feeds.base import ClosedCandle
from cracktrader.data.feeds.quotes import Quote
from cracktrader.engine.backtest import BacktestResult, deliverer, simulator_result
from cracktrader.engine.broker import BarContext, EventSimulator, Order, SimSettings
from cracktrader.engine.context import Fill, OrderKind, OrderUpdate, Side
from cracktrader.engine.fills import BUY, SELL
from cracktrader.engine.records import REASON_RISK_LIMIT
from cracktrader.engine.rules import MarketRules
from cracktrader.engine.strategy import Strategy
from cracktrader.engine.window import WindowContext, act_on_signals, live_decision, window_length
from cracktrader.errors import UserInputError


class PaperSession:
    """A strategy trading on closed candles delivered one bar time at a time (`on_bar`), filled by the simulator."""

    def __init__(
        self,
        strategy: Strategy,
        symbols: tuple[str, ...],
        settings: SimSettings,
        periods_per_year: float,
        *,
        risk: RiskGate | None = None,
        timeframe_ms: int | None = None,
    ) -> None:
        if not symbols:
            raise UserInputError("A paper session needs at least one symbol")
        self.strategy = strategy
        self.symbols = symbols
        self._symbol_set = frozenset(symbols)
        self.sim = EventSimulator.live(symbols, settings, periods_per_year, events=strategy.wants_events())
        self.ctx = BarContext(self.sim)
        self.window = window_length(strategy)
        self._deliver = deliverer(strategy, self.sim, self.ctx) if strategy.wants_events() else None
        self._vectorized = strategy.style() == "vectorized"
        self._last_close = np.full(len(symbols), math.nan)
        self.last_timestamp: int | None = None
        self.risk = risk
        self.timeframe_ms = timeframe_ms  # with a risk gate: candles this much past their close plus 30 s are stale
        self.denials: list[RiskDenial] = []  # the last ones, newest last
        self.warmup_bars = 0  # history bars added by `warm` before the first live one
        self.quotes: QuoteFills | None = None  # the quote fill model; None: the bar model (the backtest's)

    def use_quotes(self, latency_ms: int, now_ms: Callable[[], int]) -> QuoteFills:
        """Fill orders from quotes (`on_quote`) instead of at the next bar's open."""
        self.quotes = QuoteFills(self.sim, latency_ms, now_ms)
        return self.quotes

    def on_quote(self, quote: Quote) -> None:
        """A live best bid and ask (quote fill model): match the working orders that may see it."""
        if self.quotes is not None:
            self.quotes.on_quote(quote)

    @property
    def bars(self) -> int:
        """Closed bars seen so far."""
        return self.sim.data.n_bars

    def warm(self, timestamp: int, candles: Mapping[str, ClosedCandle]) -> None:
        """Add a bar of history from before the session started: in the window, but never decided on."""
        t, _ = self._append(timestamp, candles)
        self.warmup_bars += 1
        self.sim.mark(t)
        self.sim.flush_marks(t)

    def on_bar(self, timestamp: int, candles: Mapping[str, ClosedCandle]) -> None:
        """Process the bar that opened at `timestamp`: fill due orders in it, then let the strategy decide.

        A symbol without a candle at this time keeps its last close and cannot trade in this bar (as the backtest's
        alignment does); candles of unknown symbols are refused.
        """
        t, tradable = self._append(timestamp, candles)
        if self.quotes is not None:
            self.quotes.apply(t)  # what quotes filled during this bar
        elif self.sim.open_orders:
            self.sim.process_bar(t)
        self.ctx.i = t
        if self.risk is not None and self.timeframe_ms:
            # A candle that arrives long after its close (a gap filled over REST after a disconnect) is stale data:
            # the strategy sees it, but nothing it orders on it goes out; the next fresh candle clears this.
            lag = self.risk.clock() - (timestamp + 2 * self.timeframe_ms)
            self.risk.set_stale(lag > STALE_AFTER_MS)
        if self._deliver is not None:
            self._deliver()
        self._decide(tradable)
        if self.quotes is not None:
            self.quotes.admit()
        self.sim.mark(t)
        self.sim.flush_marks(t)
        if self.risk is not None:
            self.risk.mark_equity(float(self.sim.equity[t]))

    def _append(self, timestamp: int, candles: Mapping[str, ClosedCandle]) -> tuple[int, np.ndarray]:
        if self.last_timestamp is not None and timestamp <= self.last_timestamp:
            raise UserInputError(f"Bar {timestamp} is not after the last bar {self.last_timestamp}")
        if not self._symbol_set.issuperset(candles):
            unknown = set(candles) - self._symbol_set
            raise UserInputError(f"Candles for symbols this session does not trade: {sorted(unknown)}")
        # Rows built in floats and turned into arrays once: writing each symbol's column into numpy was ~40 us of
        # a 10-symbol live bar.
        rows: list[tuple[float, float, float, float, float]] = []
        present: list[bool] = []
        last_close = self._last_close
        for j, symbol in enumerate(self.symbols):
            c = candles.get(symbol)
            if c is None:
                last = float(last_close[j])
                rows.append((last, last, last, last, 0.0))
                present.append(False)
            else:
                rows.append((c.open, c.high, c.low, c.close, c.volume))
                present.append(True)
                last_close[j] = c.close
        cols = np.array(rows, dtype=np.float64).T
        tradable = np.array(present, dtype=np.bool_)
        t = self.sim.append_bar(timestamp, cols[0], cols[1], cols[2], cols[3], cols[4], tradable)
        self.last_timestamp = timestamp
        return t, tradable

    def _context(self) -> WindowContext:
        """The context the strategy decides in this bar."""
        if self.risk is None:
            return WindowContext(self.ctx, self.strategy, self.window)
        return _GatedContext(self.ctx, self.strategy, self.window, self)

    def _decide(self, tradable: np.ndarray) -> None:
        wctx = self._context()
        if not self._vectorized:
            self.strategy.on_bar(wctx)
            return
        allow_short = self.sim.s.allow_short
        for j, symbol in enumerate(self.symbols):
            if tradable[j]:  # no decision on a bar without the symbol's candle, as in the kernel
                act_on_signals(wctx, symbol, live_decision(self.strategy, wctx.bars(symbol)), allow_short=allow_short)

    def runtime_state(self) -> dict[str, Any] | None:
        """What a runtime built on this session keeps beside the simulator's state (live: fills booked)."""
        return None

    def restore_runtime_state(self, state: dict[str, Any] | None) -> None:
        """Put back what `runtime_state` returned."""

    def result(self) -> BacktestResult:
        """Everything so far in a backtest's shape: orders, equity, positions, metrics."""
        if self.bars == 0:
            raise UserInputError("The session has not seen a closed bar yet")
        return simulator_result(self.sim, self.bars)


@dataclass(frozen=True, slots=True)
class _Proposed:
    """An order as the risk gate reads it."""

    symbol: str
    side: Side
    type: OrderKind
    amount: float
    price: float | None
    stop: float | None


MAX_DENIALS_KEPT = 50


class _GatedContext(WindowContext):
    """The live window whose order entry passes the session's risk gate first; a refusal is recorded as rejected."""

    def __init__(self, ctx: BarContext, strategy: Strategy, length: int, session: PaperSession) -> None:
        super().__init__(ctx, strategy, length)
        self._session = session

    def _refused(
        self,
        side: int,
        symbol: str | None,
        size: float | None,
        limit: float | None,
        stop: float | None,
        fraction: float,
    ) -> bool:
        """Whether the gate refuses the order (then it is recorded as rejected, with the denial kept)."""
        gate = self._session.risk
        assert gate is not None
        ctx = self._ctx
        name = self.symbols[ctx._j(symbol)]
        price = ctx.price(name)
        position = self.position(name)
        if size is not None:
            amount = size
        elif (position > 0) == (side == SELL) and position != 0:
            amount = abs(position)  # closes the whole position
        else:
            amount = self.cash * fraction / price if price > 0 else 0.0
        kind: OrderKind = "stop_limit" if limit is not None and stop is not None else (
            "limit" if limit is not None else ("stop" if stop is not None else "market"))  # fmt: skip
        # The runtime's own views (the simulator's in paper, the venue orders' in live; unknown ones at full size).
        working = self.open_orders(name)
        open_buy = sum(o.size or 0.0 for o in working if o.side == "buy")
        open_sell = sum(o.size or 0.0 for o in working if o.side == "sell")
        denial = gate.check(
            _Proposed(name, "buy" if side == BUY else "sell", kind, amount, limit, stop),
            last_price=price,
            exposure=Exposure(position, open_buy, open_sell),
            open_orders=len(self.open_orders()),
        )
        if denial is None:
            return False
        sim = self._session.sim
        sim.reject_now(ctx.i, ctx._j(symbol), side, size, REASON_RISK_LIMIT)
        self._session.denials.append(denial)
        del self._session.denials[:-MAX_DENIALS_KEPT]
        return True

    def _record(self, side: int, symbol: str | None, size: float | None, **kw: float | None) -> int:
        # buy() and sell() of the window context both come here: the one place orders are gated.
        fraction = kw.get("fraction")
        if self._refused(side, symbol, size, kw.get("limit"), kw.get("stop"), 1.0 if fraction is None else fraction):
            return -1
        return super()._record(side, symbol, size, **kw)

    def close_position(self, symbol: str | None = None) -> int | None:
        position = self._ctx.position(symbol)
        if position == 0.0:
            return None
        side = SELL if position > 0 else BUY
        if self._refused(side, symbol, abs(position), None, None, 1.0):
            return -1
        return super().close_position(symbol)


# Persistence: what a stored session needs to rebuild its simulator exactly (a restart, `/results` from rows).

STATE_VERSION = 1


@dataclass(slots=True)
class SessionSnapshot:
    """A session's stored bars, equity, finished orders and state: enough to rebuild its simulator exactly."""

    timestamp: np.ndarray  # (n,) bar open times, ms
    ohlcv: np.ndarray  # (5, n, m): open, high, low, close, volume (the carried close where a symbol had none)
    tradable: np.ndarray  # (n, m) bool
    equity: np.ndarray  # (n,)
    cash: np.ndarray  # (n,)
    in_market: np.ndarray  # (n,) bool
    rows: list[list[float]]  # finished orders as engine rows (engine.records), bar indices into the n bars
    state: dict[str, Any]  # `export_state()` after bar n - 1


def _event_dict(event: Fill | OrderUpdate) -> dict[str, Any]:
    return {"kind": "fill" if isinstance(event, Fill) else "order", **asdict(event)}


def _event(raw: dict[str, Any]) -> Fill | OrderUpdate:
    fields = {k: v for k, v in raw.items() if k != "kind"}
    return Fill(**fields) if raw["kind"] == "fill" else OrderUpdate(**fields)


def export_state(session: PaperSession) -> dict[str, Any]:
    """The simulator's working state after the last bar, as JSON-able values (NaN kept: the store writes text)."""
    sim = session.sim
    return {
        "version": STATE_VERSION,
        "settings": asdict(sim.s),
        "periods_per_year": sim.data.periods_per_year,
        "cash": sim.cash,
        "book": sim.book.tolist(),
        "next_id": sim._next_id,
        "open_orders": [astuple(o) for o in sim.open_orders],
        "events": [_event_dict(e) for e in sim.events or []],
        "last_close": session._last_close.tolist(),
        "last_timestamp": session.last_timestamp,
        "warmup_bars": session.warmup_bars,
        "risk": None if session.risk is None else session.risk.state(),
        "runtime": session.runtime_state(),
    }


def rebuild_simulator(symbols: tuple[str, ...], snapshot: SessionSnapshot, *, events: bool) -> EventSimulator:
    """A live simulator holding the snapshot's bars and state, as the session's was after its last stored bar."""
    state = snapshot.state
    n = int(snapshot.timestamp.shape[0])
    settings = _settings(state["settings"])
    sim = EventSimulator.live(symbols, settings, float(state["periods_per_year"]), events=events, capacity=max(1024, n))
    _restore_into(sim, snapshot)
    return sim


def _settings(raw: dict[str, Any]) -> SimSettings:
    """The stored `SimSettings` (asdict turned its exchange rules into dicts)."""
    rules = raw.get("rules")
    return SimSettings(**{**raw, "rules": None if rules is None else tuple(MarketRules(**r) for r in rules)})


def _restore_into(sim: EventSimulator, snapshot: SessionSnapshot) -> None:
    state = snapshot.state
    if state.get("version") != STATE_VERSION:
        raise UserInputError(f"Stored session state version {state.get('version')!r} is not {STATE_VERSION}")
    o, h, lo, c, v = snapshot.ohlcv
    for t, ts in enumerate(snapshot.timestamp.tolist()):
        sim.append_bar(int(ts), o[t], h[t], lo[t], c[t], v[t], snapshot.tradable[t])
    n = sim.data.n_bars
    # The curve as it was marked, not re-marked: a flatten at the stop changed the last point after its bar.
    sim.equity[:n], sim.cash_curve[:n], sim.in_market[:n] = snapshot.equity, snapshot.cash, snapshot.in_market
    sim.cash = float(state["cash"])
    sim.book[:] = np.asarray(state["book"], dtype=np.float64).reshape(sim.book.shape)
    sim.pos = [float(x) for x in sim.book[:, 0]]
    sim._held_at_flush = list(sim.pos)
    sim._next_id = int(state["next_id"])
    sim.rows = [list(map(float, r)) for r in snapshot.rows]
    sim.open_orders = [_order(raw) for raw in state["open_orders"]]
    if sim.events is not None:
        sim.events[:] = [_event(e) for e in state["events"]]  # in place: the strategy's deliverer holds this list


def _order(raw: list[Any]) -> Order:
    values = list(raw)
    values[-1] = [int(x) for x in values[-1]]  # children
    return Order(*values)


def restore_session(session: PaperSession, snapshot: SessionSnapshot) -> None:
    """Put a freshly made session (no bars yet) where the stored one was: bars, orders, positions, cash."""
    if session.bars:
        raise UserInputError("Only a session with no bars yet can be restored")
    _restore_into(session.sim, snapshot)
    state = snapshot.state
    session._last_close = np.asarray(state["last_close"], dtype=np.float64)
    session.last_timestamp = state["last_timestamp"]
    session.warmup_bars = int(state["warmup_bars"])
    if session.risk is not None and state.get("risk") is not None:
        session.risk.restore(state["risk"])
    session.restore_runtime_state(state.get("runtime"))
