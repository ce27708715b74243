"""Run a strategy over market data with either simulator and collect the results."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cracktrader.engine import kernels
from cracktrader.engine.accounting import B_ENTRY_PRICE
from cracktrader.engine.broker import BarContext, EventSimulator, OrderDecision, SimSettings
from cracktrader.engine.context import Fill
from cracktrader.engine.market import MarketData
from cracktrader.engine.metrics import compute_metrics
from cracktrader.engine.records import N_COLS, O_BAR, O_FEE, O_PNL, O_RETURN, O_SIDE, O_STATUS, O_SYMBOL, STATUS_FILLED
from cracktrader.engine.strategy import Signals, Strategy
from cracktrader.engine.window import act_on_signals, compute_indicators, decision_at
from cracktrader.errors import UserInputError

# Called with (bars done, bars total, cash, value) between chunks of a run.
Progress = Callable[[int, int, float, float], None]
ShouldStop = Callable[[], bool]
# Called with the order rows (see engine.records) recorded since the previous call.
OnOrders = Callable[[np.ndarray], None]
# Called with the context at each bar of an event-driven run, before `on_bar`.
Probe = Callable[[BarContext], None]

VECTOR_CHUNK = 1 << 18
EVENT_CHUNK = 1 << 12
# An event chunk also ends after this long, so a slow `on_bar` still reports progress and sees a stop promptly.
EVENT_CHUNK_S = 0.05
# The clock is read after blocks of at most this many bars; blocks shrink for strategies slow enough to need it.
EVENT_BLOCK = 256


@dataclass(slots=True)
class Position:
    """An open position at the end of a run."""

    symbol: str
    size: float
    entry_price: float
    market_price: float
    value: float
    unrealized_pnl: float


@dataclass(slots=True)
class BacktestResult:
    """Everything a backtest produced, as arrays; `runs.document` turns it into the results document."""

    symbols: tuple[str, ...]
    timestamp: np.ndarray
    equity: np.ndarray
    cash: np.ndarray
    in_market: np.ndarray
    orders: np.ndarray  # (k, N_COLS) rows; see engine.records
    positions: list[Position]
    metrics: dict[str, Any]
    settings: SimSettings
    bars_processed: int
    completed: bool
    style: str
    extra: dict[str, Any] = field(default_factory=dict)
    decisions: list[OrderDecision] | None = None  # event style, when probed: the strategy's order entries

    @property
    def final_value(self) -> float:
        return float(self.equity[-1]) if self.bars_processed else self.settings.initial_cash


def run_backtest(
    strategy: Strategy,
    data: MarketData,
    settings: SimSettings,
    *,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    on_orders: OnOrders | None = None,
    probe: Probe | None = None,
) -> BacktestResult:
    """Simulate `strategy` on `data`: decisions at a bar's close fill at the open `latency` bars later.

    `probe` (event style only) is called with the context before each `on_bar`, and turns on the record of
    the strategy's decisions (`BacktestResult.decisions`): `cracktrader check` uses both.
    """
    if data.n_bars == 0:
        raise UserInputError("No bars to backtest")
    if settings.latency < 1:
        raise UserInputError("latency must be at least 1 bar: a decision at a close cannot fill at that close")
    if settings.initial_cash <= 0:
        raise UserInputError("initial_cash must be positive")
    if strategy.style() == "vectorized":
        if settings.rules is not None:
            # Exchange rules (precision, minimums, locked funds) live in the event simulator only, so the
            # compiled kernel stays as fast as without them; paper trading decides the same way.
            return _run_event(strategy, data, settings, progress, should_stop, on_orders, None, _signal_decider)
        return _run_vectorized(strategy, data, settings, progress, should_stop, on_orders)
    return _run_event(strategy, data, settings, progress, should_stop, on_orders, probe)


def _signal_decider(strategy: Strategy, sim: EventSimulator) -> Callable[[BarContext], None]:
    """An `on_bar` acting on a vectorized strategy's signals over the whole history, as a paper session does."""
    data = sim.data
    n = data.n_bars
    allow_short = sim.s.allow_short
    pairs = []
    for j, symbol in enumerate(data.symbols):
        sig = strategy.signals(data.bars(j))
        acts = np.zeros(n, dtype=np.bool_)
        for flags in (sig.entries, sig.exits, *((sig.short_entries, sig.short_exits) if allow_short else ())):
            if flags is not None:
                acts |= np.broadcast_to(np.asarray(flags, dtype=np.bool_), (n,))
        # A bar without a signal decides nothing, and one without the symbol's candle cannot (as in the kernel).
        pairs.append((symbol, sig, (acts & data.tradable[:, j]).tolist()))

    def on_bar(ctx: BarContext) -> None:
        t = ctx.i
        for symbol, sig, acts in pairs:
            if acts[t]:
                act_on_signals(ctx, symbol, decision_at(sig, t), allow_short=allow_short)

    return on_bar


def stack_values(data: MarketData, values: list[Any], dtype: type, default: Any) -> np.ndarray:
    """Stack per-symbol signal columns into (n, m), broadcasting scalars as (1, 1) (a sweep stacks its risk params)."""
    n, m = data.n_bars, len(data.symbols)
    if all(v is None or np.ndim(v) == 0 for v in values) and len({_scalar(v, default) for v in values}) == 1:
        return np.full((1, 1), _scalar(values[0], default), dtype=dtype)
    out: np.ndarray = np.empty((n, m), dtype=dtype)
    for j, v in enumerate(values):
        col: np.ndarray = np.asarray(default if v is None else v, dtype=dtype)
        if col.ndim and col.shape[0] != n:
            raise UserInputError(f"Signal array for {data.symbols[j]} has {col.shape[0]} bars, expected {n}")
        out[:, j] = col
    if dtype is np.float64 and default == 1.0:
        np.nan_to_num(out, copy=False, nan=1.0)
    return out


def _scalar(v: Any, default: Any) -> Any:
    return default if v is None or (isinstance(v, float) and v != v and default == 1.0) else v


def _bool_matrix(data: MarketData, cols: list[np.ndarray | None]) -> np.ndarray:
    if all(c is None for c in cols):
        return np.zeros((1, 1), dtype=np.bool_)
    n = data.n_bars
    if len(cols) == 1 and cols[0] is not None:
        arr = np.asarray(cols[0], dtype=np.bool_)
        if arr.shape[0] != n:
            raise UserInputError(f"Signal array has {arr.shape[0]} bars, expected {n}")
        return arr.reshape(n, 1)
    return stack_values(data, list(cols), np.bool_, False)


def _eventful_bars(n: int, signals: list[np.ndarray]) -> np.ndarray:
    """Bars where any symbol has a signal; every other bar can only be marked to market (or hit a stop)."""
    out = np.zeros(n, dtype=np.bool_)
    for sig in signals:
        if sig.shape[0] == n:
            out |= sig.any(axis=1) if sig.shape[1] > 1 else sig[:, 0]
        elif sig.any():
            out[:] = True  # a broadcast (1, 1) True signal fires on every bar
    return out


@dataclass(slots=True)
class SignalArrays:
    """A strategy's signals as the kernel takes them: (bars, symbols) arrays, or (1, 1) broadcasts."""

    entries: np.ndarray
    exits: np.ndarray
    short_entries: np.ndarray
    short_exits: np.ndarray
    stop_loss: np.ndarray
    take_profit: np.ndarray
    size: np.ndarray
    eventful: np.ndarray


def signal_arrays(strategy: Strategy, data: MarketData, *, allow_short: bool = False) -> SignalArrays:
    """Evaluate a vectorized strategy on every symbol and stack its signals for the kernel."""
    sigs = [strategy.signals(data.bars(j)) for j in range(len(data.symbols))]
    return stack_signals(data, sigs, allow_short=allow_short)


def stack_signals(data: MarketData, sigs: list[Signals], *, allow_short: bool = False) -> SignalArrays:
    """Each symbol's signals stacked for the kernel (a sweep evaluates them itself, on cached indicators)."""
    entries = _bool_matrix(data, [s.entries for s in sigs])
    exits = _bool_matrix(data, [s.exits for s in sigs])
    short_entries = _bool_matrix(data, [s.short_entries for s in sigs])
    short_exits = _bool_matrix(data, [s.short_exits for s in sigs])
    return SignalArrays(
        entries,
        exits,
        short_entries,
        short_exits,
        stack_values(data, [s.stop_loss for s in sigs], np.float64, np.nan),
        stack_values(data, [s.take_profit for s in sigs], np.float64, np.nan),
        stack_values(data, [s.size for s in sigs], np.float64, 1.0),
        _eventful_bars(data.n_bars, [entries, exits, *((short_entries, short_exits) if allow_short else ())]),
    )


@dataclass(slots=True)
class Simulation:
    """Raw output of the compiled simulator."""

    equity: np.ndarray
    cash: np.ndarray
    in_market: np.ndarray
    orders: np.ndarray
    positions: list[tuple[int, float, float]]
    done: int


def simulate_arrays(
    data: MarketData,
    sig: SignalArrays,
    settings: SimSettings,
    *,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    on_orders: OnOrders | None = None,
) -> Simulation:
    """Run the compiled kernel over all bars in chunks (progress, stop and streaming happen between chunks)."""
    n = data.n_bars
    cash, fstate, istate = kernels.new_state(len(data.symbols), settings.initial_cash)
    equity, cash_curve, in_market = np.empty(n), np.empty(n), np.zeros(n, dtype=np.bool_)
    orders = np.empty((1024, N_COLS))
    n_orders = reported = 0
    done = 0
    while done < n:
        end = min(n, done + VECTOR_CHUNK)
        reached, n_orders = kernels.simulate_signals(
            done,
            end,
            data.open,
            data.high,
            data.low,
            data.close,
            data.tradable,
            sig.entries,
            sig.exits,
            sig.short_entries,
            sig.short_exits,
            sig.stop_loss,
            sig.take_profit,
            sig.size,
            settings.maker_fee,
            settings.taker_fee,
            settings.slippage,
            settings.latency,
            settings.allow_short,
            cash,
            fstate,
            istate,
            orders,
            n_orders,
            equity,
            cash_curve,
            in_market,
            sig.eventful,
        )
        if reached < end:
            # The order buffer filled up: grow it and carry on from the bar the kernel stopped at.
            grown = np.empty((orders.shape[0] * 2, N_COLS))
            grown[:n_orders] = orders[:n_orders]
            orders = grown
        done = reached
        if on_orders is not None and n_orders > reported:
            on_orders(orders[reported:n_orders].copy())
            reported = n_orders
        if progress is not None:
            progress(done, n, float(cash_curve[done - 1]), float(equity[done - 1]))
        if should_stop is not None and done < n and should_stop():
            break
    positions = [
        (j, float(fstate[j, kernels.S_POS]), float(fstate[j, kernels.S_ENTRY_PRICE])) for j in range(len(data.symbols))
    ]
    return Simulation(equity, cash_curve, in_market, orders[:n_orders].copy(), positions, done)


def _run_vectorized(
    strategy: Strategy,
    data: MarketData,
    settings: SimSettings,
    progress: Progress | None,
    should_stop: ShouldStop | None,
    on_orders: OnOrders | None,
) -> BacktestResult:
    sig = signal_arrays(strategy, data, allow_short=settings.allow_short)
    sim = simulate_arrays(data, sig, settings, progress=progress, should_stop=should_stop, on_orders=on_orders)
    return _result(
        data, settings, sim.equity, sim.cash, sim.in_market, sim.orders, sim.positions, sim.done, "vectorized"
    )


def _run_event(
    strategy: Strategy,
    data: MarketData,
    settings: SimSettings,
    progress: Progress | None,
    should_stop: ShouldStop | None,
    on_orders: OnOrders | None,
    probe: Probe | None = None,
    decider: Callable[[Strategy, EventSimulator], Callable[[BarContext], None]] | None = None,
) -> BacktestResult:
    wants_events = strategy.wants_events()
    sim = EventSimulator(data, settings, events=wants_events)
    if probe is not None:
        sim.decisions = []
    indicators = None if decider else [compute_indicators(strategy, data.bars(j)) for j in range(len(data.symbols))]
    ctx = BarContext(sim, indicators)
    n = data.n_bars
    done = reported = 0
    on_bar = strategy.on_bar if decider is None else decider(strategy, sim)
    process, mark = sim.process_bar, sim.mark
    deliver = deliverer(strategy, sim, ctx) if wants_events else None
    block = 1
    while done < n:
        end = min(n, done + EVENT_CHUNK)
        deadline = time.perf_counter() + EVENT_CHUNK_S
        while done < end:
            stop_at = min(end, done + block)
            began = time.perf_counter()
            for t in range(done, stop_at):
                if sim.open_orders:
                    process(t)
                ctx.i = t
                if deliver is not None:
                    deliver()
                if probe is not None:
                    probe(ctx)
                on_bar(ctx)
                mark(t)
            sim.flush_marks(done)
            done = stop_at
            now = time.perf_counter()
            # Fast strategies read the clock every EVENT_BLOCK bars; a slow one every bar or few, so a chunk
            # never runs far past its deadline.
            if now - began < EVENT_CHUNK_S / 8:
                block = min(EVENT_BLOCK, block * 2)
            elif now - began > EVENT_CHUNK_S / 2:
                block = max(1, block // 2)
            if now > deadline:
                break
        if on_orders is not None and len(sim.rows) > reported:
            on_orders(np.asarray(sim.rows[reported:], dtype=np.float64))
            reported = len(sim.rows)
        if progress is not None:
            progress(done, n, sim.cash, float(sim.equity[done - 1]))
        if should_stop is not None and done < n and should_stop():
            break
    return simulator_result(sim, done)


def simulator_result(sim: EventSimulator, done: int) -> BacktestResult:
    """The result of an event simulator after its first `done` bars (a backtest's, or a paper session's so far)."""
    data = sim.data
    positions = [(j, sim.pos[j], float(sim.book[j, B_ENTRY_PRICE])) for j in range(len(data.symbols))]
    result = _result(
        data,
        sim.s,
        sim.equity,
        sim.cash_curve,
        sim.in_market,
        sim.order_records(done - 1),
        positions,
        done,
        "event",
    )
    result.decisions = sim.decisions
    return result


def deliverer(strategy: Strategy, sim: EventSimulator, ctx: BarContext) -> Callable[[], None]:
    """A function handing the simulator's queued fills and order updates to the strategy's callbacks."""
    events = sim.events
    assert events is not None

    def deliver() -> None:
        if events:
            batch = events[:]
            events.clear()  # orders placed by the callbacks report on the next bar, so this always ends
            for event in batch:
                if isinstance(event, Fill):
                    strategy.on_fill(ctx, event)
                else:
                    strategy.on_order(ctx, event)

    return deliver


def _result(
    data: MarketData,
    settings: SimSettings,
    equity: np.ndarray,
    cash_curve: np.ndarray,
    in_market: np.ndarray,
    orders: np.ndarray,
    positions: list[tuple[int, float, float]],
    done: int,
    style: str,
) -> BacktestResult:
    equity, cash_curve, in_market = equity[:done], cash_curve[:done], in_market[:done]
    timestamp = data.timestamp[:done]
    last = done - 1
    open_positions = []
    for j, size, entry in positions:
        if size != 0.0:
            price = float(data.close[last, j])
            open_positions.append(Position(data.symbols[j], size, entry, price, size * price, size * (price - entry)))
    fills = fill_summary(orders)
    metrics = compute_metrics(
        equity=equity,
        initial_cash=settings.initial_cash,
        timestamps_ms=timestamp,
        periods_per_year=data.periods_per_year,
        trade_pnls=fills.pnls,
        trade_returns=fills.returns,
        fees_paid=fills.fees,
        in_market=in_market,
        buy_and_hold_return=buy_and_hold_return(data, done),
    )
    return BacktestResult(
        data.symbols,
        timestamp,
        equity,
        cash_curve,
        in_market,
        orders,
        open_positions,
        metrics,
        settings,
        done,
        done == data.n_bars,
        style,
    )


@dataclass(frozen=True, slots=True)
class FillSummary:
    """What the metrics take of a run's order rows: round-trip pnls and returns, and the fees paid."""

    pnls: np.ndarray
    returns: np.ndarray
    fees: float


def fill_summary(orders: np.ndarray) -> FillSummary:
    """Round trips and fees of order rows (see engine.records), summed in time order."""
    filled_rows = orders[:, O_STATUS] == STATUS_FILLED
    # Copying rows through a boolean mask cost a sweep row 4 ms on 25,000 orders: skip it when every order filled.
    filled = orders if bool(filled_rows.all()) else orders[filled_rows]
    # Fills in time order (bar, symbol, side), whatever order a simulator numbered them in: sums over them
    # (fees, pnl statistics) then round the same way in the kernel, the event simulator and paper trading.
    # At most one fill per bar, in bar order (one symbol), is that order already: the sort would cost a sweep
    # of 10,000 rows a third of its time.
    bars = filled[:, O_BAR]
    if not bool(np.all(bars[1:] > bars[:-1])):
        filled = filled[np.lexsort((filled[:, O_SIDE], filled[:, O_SYMBOL], bars))]
    # The closing fills' two columns only (the same values in the same order), not copies of whole rows.
    pnl = filled[:, O_PNL]
    closing = ~np.isnan(pnl)
    return FillSummary(pnl[closing], filled[:, O_RETURN][closing], float(filled[:, O_FEE].sum()))


def buy_and_hold_return(data: MarketData, done: int) -> float:
    """Equal-weight return of buying every symbol at its first open and holding to the last close."""
    if done == 0:
        return 0.0
    rets = []
    for j in range(len(data.symbols)):
        present = np.flatnonzero(data.tradable[:done, j])
        if present.size:
            rets.append(data.close[done - 1, j] / data.open[present[0], j] - 1.0)
    return float(np.mean(rets)) if rets else 0.0
