"""Compiled sweep kernels: each combination gives exactly its single backtest's rows and stats.

Two paths (`cross_combo` picks one for a crossover combination). The general one (`run_signals`) calls the
backtest's own simulator (`kernels.simulate_signals`, and through it `accounting.apply_fill`) and metric kernels
(`metrics._return_stats_kernel`, `_drawdown_kernel`) on
per-thread scratch curves of one bar length. The fused one (`run_rule`, `run_cross`, `run_flags`: one symbol, long
only, no stop or target, the common sweep) derives each decision from the cached indicator series by its built-in's
rule (or reads the signal arrays) in a tight scan, fills through the same `_open_position` / `_close_position` /
`_record`, and keeps no curve at all: each fill starts a segment (bar, cash, position) and `_segment_stats`
recomputes every bar's equity with the simulator's expression and reduces it in the metric kernels' order, with flat
runs in O(1) (first pass) and `add_repeated` (second pass). Memory never grows with bars x combinations; tests
compare both paths bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import numpy as np
from llvmlite import ir
from numba import literally, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from cracktrader.engine.fills import BUY, SELL, market_fill_price
from cracktrader.engine.indicators import crosses
from cracktrader.engine.kernels import (
    ACT_CLOSE_LONG,
    ACT_OPEN_LONG,
    P_ACTION,
    P_CREATED,
    P_DUE,
    S_PEND_SIZE,
    S_PEND_SL,
    S_PEND_TP,
    S_POS,
    _close_position,
    _open_position,
    _record,
    new_state,
    simulate_signals,
)
from cracktrader.engine.metrics import _drawdown_kernel, _return_stats_kernel
from cracktrader.engine.records import (
    N_COLS,
    REASON_INSUFFICIENT_CASH,
    REASON_SIGNAL,
    STATUS_FILLED,
    STATUS_REJECTED,
    TYPE_MARKET,
)

# Columns of a combination's stats row (see `metrics.CurveStats`), plus the bars in the market.
ST_FINAL = 0
ST_FINITE = 1
ST_MEAN = 2
ST_STD = 3
ST_DOWNSIDE = 4
ST_MAX_DD = 5
ST_MAX_LEN = 6
ST_MAX_MS = 7
ST_IN_MARKET = 8
N_STATS = 9
# Which parts of the stats row the fused kernel computes (`_segment_stats`): the final equity and the bars in the
# market always; the per-bar return stats and the drawdown only when a chosen metric reads them, since each is a
# pass over every bar in the market (most of a row's time) while the rest is O(fills).
NEED_RETURNS = 1
NEED_DRAWDOWN = 2
NEED_ALL = NEED_RETURNS | NEED_DRAWDOWN
# numpy's error model (a division by zero gives inf or NaN instead of raising) lets LLVM drop a check per bar from
# the metric kernels inlined here: 40 % faster per combination. The fill rule never divides by zero on valid
# candles (prices > 0), where both models give the same bits; the tests compare every sweep with `backtest`.


@njit(cache=True, nogil=True, error_model="numpy")
def run_signals(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    tradable: np.ndarray,
    entries: np.ndarray,
    exits: np.ndarray,
    short_entries: np.ndarray,
    short_exits: np.ndarray,
    stop_loss: np.ndarray,
    take_profit: np.ndarray,
    size: np.ndarray,
    maker_fee: float,
    taker_fee: float,
    slippage: float,
    latency: int,
    allow_short: bool,
    initial_cash: float,
    eventful: np.ndarray,
    timestamp: np.ndarray,
    t_before: float,
    equity: np.ndarray,
    cash_curve: np.ndarray,
    in_market: np.ndarray,
    orders: np.ndarray,
    n_orders: int,
    stats: np.ndarray,
) -> tuple[np.ndarray, int]:
    """Simulate one combination over every bar, append its order rows after `n_orders` and fill its stats row.

    Returns the order buffer (grown when it filled up, as `backtest.simulate_arrays` grows it) and its row count.
    """
    n = close.shape[0]
    cash, fstate, istate = new_state(close.shape[1], initial_cash)
    done = 0
    while done < n:
        reached, n_orders = simulate_signals(
            done,
            n,
            open_,
            high,
            low,
            close,
            tradable,
            entries,
            exits,
            short_entries,
            short_exits,
            stop_loss,
            take_profit,
            size,
            maker_fee,
            taker_fee,
            slippage,
            latency,
            allow_short,
            cash,
            fstate,
            istate,
            orders,
            n_orders,
            equity,
            cash_curve,
            in_market,
            eventful,
        )
        if reached < n:
            grown = np.empty((orders.shape[0] * 2, N_COLS))
            grown[:n_orders] = orders[:n_orders]
            orders = grown
        done = reached
    # The cash curve is not needed any more: it holds the per-bar returns between the kernel's two passes.
    finite, mean, std, downside = _return_stats_kernel(equity, initial_cash, cash_curve)
    max_dd, max_len, max_ms = _drawdown_kernel(equity, timestamp, initial_cash, t_before)
    held = 0
    for t in range(n):
        if in_market[t]:
            held += 1
    stats[ST_FINAL] = equity[n - 1]
    stats[ST_FINITE] = 1.0 if finite else 0.0
    stats[ST_MEAN] = mean
    stats[ST_STD] = std
    stats[ST_DOWNSIDE] = downside
    stats[ST_MAX_DD] = max_dd
    stats[ST_MAX_LEN] = max_len
    stats[ST_MAX_MS] = max_ms
    stats[ST_IN_MARKET] = held
    return orders, n_orders


@njit(cache=True, nogil=True, error_model="numpy")
def cross_combo(
    a_cols: np.ndarray,
    b_cols: np.ndarray,
    size_frac: float,
    stop_loss_frac: float,
    take_profit_frac: float,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    tradable: np.ndarray,
    maker_fee: float,
    taker_fee: float,
    slippage: float,
    latency: int,
    allow_short: bool,
    initial_cash: float,
    timestamp: np.ndarray,
    t_before: float,
    entries: np.ndarray,
    exits: np.ndarray,
    eventful: np.ndarray,
    equity: np.ndarray,
    cash_curve: np.ndarray,
    in_market: np.ndarray,
    orders: np.ndarray,
    segs: np.ndarray,
    stats: np.ndarray,
    need: int = NEED_ALL,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One crossover combination: entries where a crosses above b (per symbol: rows of the (m, n) a_cols, b_cols),
    exits below; size, stop-loss and take-profit as the backtest stacks a built-in's scalar risk params; `need`
    the parts of the fused kernel's stats row to compute (the general path computes all).

    Returns the order and segment buffers (grown when they filled up) and the combination's order row count.
    """
    n, m = close.shape
    if m == 1 and stop_loss_frac != stop_loss_frac and take_profit_frac != take_profit_frac:
        # One symbol, no stop-loss or take-profit: the fused kernel, no entries/exits/equity arrays.
        return run_cross(
            a_cols[0],
            b_cols[0],
            open_,
            close,
            tradable,
            size_frac,
            taker_fee,
            slippage,
            latency,
            initial_cash,
            timestamp,
            t_before,
            orders,
            0,
            segs,
            stats,
            need,
        )
    # The strategy's `crossed_above` / `crossed_below`, bar by bar through the same `crosses`.
    eventful[0] = False
    for j in range(m):
        a = a_cols[j]
        b = b_cols[j]
        entries[0, j] = False
        exits[0, j] = False
        for t in range(1, n):
            up = crosses(a[t - 1], a[t], b[t - 1], b[t], True)
            down = crosses(a[t - 1], a[t], b[t - 1], b[t], False)
            entries[t, j] = up
            exits[t, j] = down
            # A bar where any symbol has a signal, as `backtest._eventful_bars` marks it.
            eventful[t] = (up or down) if j == 0 else (eventful[t] or up or down)
    no_short = np.zeros((1, 1), dtype=np.bool_)
    size = np.full((1, 1), size_frac)
    stop_loss = np.full((1, 1), stop_loss_frac)
    take_profit = np.full((1, 1), take_profit_frac)
    orders, n_orders = run_signals(
        open_,
        high,
        low,
        close,
        tradable,
        entries,
        exits,
        no_short,
        no_short,
        stop_loss,
        take_profit,
        size,
        maker_fee,
        taker_fee,
        slippage,
        latency,
        allow_short,
        initial_cash,
        eventful,
        timestamp,
        t_before,
        equity,
        cash_curve,
        in_market,
        orders,
        0,
        stats,
    )
    return orders, segs, n_orders


# Columns of a segment row of the fused crossover kernel: the bars from `start` on hold this cash and position.
SEG_START = 0
SEG_CASH = 1
SEG_POS = 2
N_SEG = 3


# Bars ahead of a scan whose open price it asks the CPU to load: a decision fills at a later bar's open, which the
# scan would otherwise read from memory at every fill (a cache miss per fill: 12 % of an EmaCross row in a profile;
# crossover rows took 25-35 % less time with the hint).
PREFETCH_AHEAD = 64


def _prefetch_typer(typingctx: object, arr: types.Array, i: types.Integer) -> object:
    """A hint to load row i of an array into the cache (llvm.prefetch; never faults, whatever i is)."""
    if not isinstance(arr, types.Array) or not isinstance(i, types.Integer):
        return None

    def codegen(context: object, builder: ir.IRBuilder, signature: object, args: list[ir.Value]) -> object:
        aryty = signature.args[0]  # type: ignore[attr-defined]
        ary = context.make_array(aryty)(context, builder, args[0])  # type: ignore[attr-defined]
        stride = cgutils.unpack_tuple(builder, ary.strides, aryty.ndim)[0]
        byte = ir.IntType(8).as_pointer()
        ptr = builder.gep(builder.bitcast(ary.data, byte), [builder.mul(args[1], stride)])
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [byte, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 1), ir.Constant(i32, 1)])
        return context.get_dummy_value()  # type: ignore[attr-defined]

    return types.void(arr, i), codegen


# Called in compiled code as _prefetch(array, row); typed here as that call, not as numba's intrinsic object.
_prefetch: Callable[[np.ndarray, int], None] = cast(Callable[[np.ndarray, int], None], intrinsic(_prefetch_typer))


# How the fused kernel derives a bar's (entry, exit) signals: each rule is its built-in's `signals` evaluated at one
# bar, with the same float operations on the same cached indicator series (x, y), the close (z) and the
# parameters (p, q); the tests compare every rule's sweep rows with single backtests bit for bit.
RULE_FLAGS = 0  # a vectorized strategy's own (n, 1) entries / exits arrays
RULE_CROSS = 1  # x crosses above y enters, below exits (SmaCross, EmaCross, TestStrategy, MacdTrend's lines)
RULE_LEVEL = 2  # x crosses above the level p enters, x > q exits (RsiMeanReversion: RSI, oversold, overbought)
RULE_BAND = 3  # z < x - p * sqrt(y) enters, z > x exits (BollingerReversion: middle band, variance, stdev)
RULE_BREAKOUT = 4  # z above the previous bar's x enters, below the previous y exits (DonchianBreakout)


@njit(cache=True, nogil=True)
def _cross_signal(x: np.ndarray, y: np.ndarray, t: int) -> tuple[bool, bool]:
    """RULE_CROSS: `crossed_above(x, y)`, `crossed_below(x, y)` at bar t (never on the first bar)."""
    if t == 0:
        return False, False
    return crosses(x[t - 1], x[t], y[t - 1], y[t], True), crosses(x[t - 1], x[t], y[t - 1], y[t], False)


@njit(cache=True, nogil=True)
def _level_signal(x: np.ndarray, p: float, q: float, t: int) -> tuple[bool, bool]:
    """RULE_LEVEL: `crossed_above(x, p)` (never on the first bar), `x > q` at bar t."""
    return t > 0 and crosses(x[t - 1], x[t], p, p, True), x[t] > q


@njit(cache=True, nogil=True)
def _band_signal(x: np.ndarray, y: np.ndarray, z: np.ndarray, p: float, t: int) -> tuple[bool, bool]:
    """RULE_BAND: `bollinger`'s width = p * sqrt(variance), lower = middle - width; close < lower, close > middle."""
    return z[t, 0] < x[t] - p * math.sqrt(y[t]), z[t, 0] > x[t]


@njit(cache=True, nogil=True)
def _breakout_signal(x: np.ndarray, y: np.ndarray, z: np.ndarray, t: int) -> tuple[bool, bool]:
    """RULE_BREAKOUT: close above `shift(x)`, below `shift(y)` (the NaN `shift` puts first compares false)."""
    if t == 0:
        return False, False
    return z[t, 0] > x[t - 1], z[t, 0] < y[t - 1]


@njit(cache=True, nogil=True)
def _decision(entry: bool, exit_: bool, long: bool) -> bool:
    """`simulate_signals`' decision from a bar's signals: exit and not entry when long, entry and not exit when flat."""
    return (exit_ and not entry) if long else (entry and not exit_)


@njit(cache=True, nogil=True)
def _decide(
    rule: int,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    p: float,
    q: float,
    entries: np.ndarray,
    exits: np.ndarray,
    t: int,
    long: bool,
) -> bool:
    """Whether bar t's close decides an order under `rule` (the signals of its `*_signal` function)."""
    if rule == RULE_CROSS:
        entry, exit_ = _cross_signal(x, y, t)
    elif rule == RULE_LEVEL:
        entry, exit_ = _level_signal(x, p, q, t)
    elif rule == RULE_BAND:
        entry, exit_ = _band_signal(x, y, z, p, t)
    elif rule == RULE_BREAKOUT:
        entry, exit_ = _breakout_signal(x, y, z, t)
    else:
        entry, exit_ = entries[t, 0], exits[t, 0]
    return _decision(entry, exit_, long)


# The scans below find the next decision bar of one rule: a cheap necessary condition of the signal the decision
# needs filters the bars, then the rule's own `*_signal` confirms; 3x faster than evaluating it on every bar.


@njit(cache=True, nogil=True)
def _scan_cross(
    x: np.ndarray, y: np.ndarray, tradable: np.ndarray, ahead: np.ndarray, t: int, t1: int, long: bool
) -> int:
    t = max(t, 1)  # no crossing on the first bar: there is no previous value to cross from
    if long:
        while t < t1:
            _prefetch(ahead, t + PREFETCH_AHEAD)
            if x[t] < y[t] and not x[t - 1] < y[t - 1] and tradable[t, 0]:
                entry, exit_ = _cross_signal(x, y, t)
                if _decision(entry, exit_, long):
                    return t
            t += 1
    else:
        while t < t1:
            _prefetch(ahead, t + PREFETCH_AHEAD)
            if x[t] > y[t] and not x[t - 1] > y[t - 1] and tradable[t, 0]:
                entry, exit_ = _cross_signal(x, y, t)
                if _decision(entry, exit_, long):
                    return t
            t += 1
    return t1


@njit(cache=True, nogil=True)
def _scan_level(
    x: np.ndarray, p: float, q: float, tradable: np.ndarray, ahead: np.ndarray, t: int, t1: int, long: bool
) -> int:
    if long:
        while t < t1:
            _prefetch(ahead, t + PREFETCH_AHEAD)
            if x[t] > q and tradable[t, 0]:
                entry, exit_ = _level_signal(x, p, q, t)
                if _decision(entry, exit_, long):
                    return t
            t += 1
    else:
        t = max(t, 1)
        while t < t1:
            _prefetch(ahead, t + PREFETCH_AHEAD)
            if x[t] > p and not x[t - 1] > p and tradable[t, 0]:
                entry, exit_ = _level_signal(x, p, q, t)
                if _decision(entry, exit_, long):
                    return t
            t += 1
    return t1


@njit(cache=True, nogil=True)
def _scan_band(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    p: float,
    tradable: np.ndarray,
    ahead: np.ndarray,
    t: int,
    t1: int,
    long: bool,
) -> int:
    if long:
        while t < t1:
            _prefetch(ahead, t + PREFETCH_AHEAD)
            if z[t, 0] > x[t] and tradable[t, 0]:
                entry, exit_ = _band_signal(x, y, z, p, t)
                if _decision(entry, exit_, long):
                    return t
            t += 1
    else:
        # The entry's own test (a sqrt per bar costs less than a mispredicted filter); p >= 0 (the plan checks).
        while t < t1:
            _prefetch(ahead, t + PREFETCH_AHEAD)
            if z[t, 0] < x[t] - p * math.sqrt(y[t]) and tradable[t, 0]:
                entry, exit_ = _band_signal(x, y, z, p, t)
                if _decision(entry, exit_, long):
                    return t
            t += 1
    return t1


@njit(cache=True, nogil=True)
def _scan_breakout(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, tradable: np.ndarray, ahead: np.ndarray, t: int, t1: int, long: bool
) -> int:
    t = max(t, 1)
    if long:
        while t < t1:
            _prefetch(ahead, t + PREFETCH_AHEAD)
            if z[t, 0] < y[t - 1] and tradable[t, 0]:
                entry, exit_ = _breakout_signal(x, y, z, t)
                if _decision(entry, exit_, long):
                    return t
            t += 1
    else:
        while t < t1:
            _prefetch(ahead, t + PREFETCH_AHEAD)
            if z[t, 0] > x[t - 1] and tradable[t, 0]:
                entry, exit_ = _breakout_signal(x, y, z, t)
                if _decision(entry, exit_, long):
                    return t
            t += 1
    return t1


@njit(cache=True, nogil=True)
def _scan_flags(
    entries: np.ndarray, exits: np.ndarray, tradable: np.ndarray, ahead: np.ndarray, t: int, t1: int, long: bool
) -> int:
    while t < t1:
        _prefetch(ahead, t + PREFETCH_AHEAD)
        if tradable[t, 0] and _decision(entries[t, 0], exits[t, 0], long):
            return t
        t += 1
    return t1


@njit(cache=True, nogil=True)
def _next_decision(
    rule: int,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    p: float,
    q: float,
    entries: np.ndarray,
    exits: np.ndarray,
    tradable: np.ndarray,
    ahead: np.ndarray,
    t: int,
    t1: int,
    long: bool,
) -> int:
    """The first bar in [t, t1) whose close decides an order by `_decide`, or t1; `ahead` is prefetched."""
    if rule == RULE_CROSS:
        return _scan_cross(x, y, tradable, ahead, t, t1, long)
    if rule == RULE_LEVEL:
        return _scan_level(x, p, q, tradable, ahead, t, t1, long)
    if rule == RULE_BAND:
        return _scan_band(x, y, z, p, tradable, ahead, t, t1, long)
    if rule == RULE_BREAKOUT:
        return _scan_breakout(x, y, z, tradable, ahead, t, t1, long)
    return _scan_flags(entries, exits, tradable, ahead, t, t1, long)


@njit(cache=True, nogil=True)
def _pend(fs: np.ndarray, long: bool, size_frac: float) -> int:
    """The action decided (close when long, open when flat), with an entry's size and no stop or target."""
    if long:
        return ACT_CLOSE_LONG
    fs[0, S_PEND_SIZE] = size_frac
    fs[0, S_PEND_SL] = math.nan
    fs[0, S_PEND_TP] = math.nan
    return ACT_OPEN_LONG


@njit(cache=True, nogil=True, error_model="numpy")
def _simulate_cross(
    t0: int,
    t1: int,
    rule: int,
    x: np.ndarray,
    y: np.ndarray,
    close: np.ndarray,
    p: float,
    q: float,
    entries: np.ndarray,
    exits: np.ndarray,
    open_: np.ndarray,
    tradable: np.ndarray,
    size_frac: float,
    taker_fee: float,
    slippage: float,
    latency: int,
    cash: np.ndarray,
    fs: np.ndarray,
    ist: np.ndarray,
    orders: np.ndarray,
    n_orders: int,
    segs: np.ndarray,
    n_segs: int,
) -> tuple[int, int, int]:
    """`simulate_signals` specialised to one symbol, long-only signals and no stop or target.

    The signals are derived bar by bar by `rule` from the indicator series x, y, the close and p, q (no
    entries/exits arrays; with RULE_FLAGS, a vectorized strategy's own (n, 1) entries/exits are read instead)
    and the equity curve is not written: each fill appends a segment (first bar, cash, position) from which the
    stats pass recomputes every bar's equity with the simulator's own expression. Fills go through the same
    `_open_position` / `_close_position` / `_record`, in the same order, so every float is the simulator's.
    Returns (first bar not simulated, order rows, segments); it stops early when the buffers may be full.
    """
    literally(rule)  # compiled per rule: its dispatch folds away, out of the loop
    c = cash[0]
    act = ist[0, P_ACTION]
    due = ist[0, P_DUE]
    created = ist[0, P_CREATED]
    t = t0
    while t < t1:
        if n_orders + 2 > orders.shape[0] or n_segs + 2 > segs.shape[0]:
            break
        # 1) The due market order at the open.
        if act != 0 and due <= t and tradable[t, 0]:
            o = open_[t, 0]
            if act == ACT_CLOSE_LONG:
                if fs[0, S_POS] != 0.0:
                    price = market_fill_price(SELL, o, slippage)
                    c, qty, fee, pnl, ret = _close_position(c, fs, 0, price, taker_fee)
                    _record(
                        orders,
                        n_orders,
                        created,
                        t,
                        0,
                        SELL,
                        TYPE_MARKET,
                        STATUS_FILLED,
                        qty,
                        price,
                        fee,
                        pnl,
                        ret,
                        REASON_SIGNAL,
                        math.nan,
                    )
                    n_orders += 1
                    segs[n_segs, SEG_START] = t
                    segs[n_segs, SEG_CASH] = c
                    segs[n_segs, SEG_POS] = fs[0, S_POS]
                    n_segs += 1
            else:
                price = market_fill_price(BUY, o, slippage)
                c, qty, fee = _open_position(c, fs, 0, BUY, price, taker_fee)
                _record(
                    orders,
                    n_orders,
                    created,
                    t,
                    0,
                    BUY,
                    TYPE_MARKET,
                    STATUS_FILLED if qty > 0.0 else STATUS_REJECTED,
                    qty,
                    price,
                    fee,
                    math.nan,
                    math.nan,
                    REASON_SIGNAL if qty > 0.0 else REASON_INSUFFICIENT_CASH,
                    math.nan,
                )
                n_orders += 1
                if qty > 0.0:
                    segs[n_segs, SEG_START] = t
                    segs[n_segs, SEG_CASH] = c
                    segs[n_segs, SEG_POS] = fs[0, S_POS]
                    n_segs += 1
            act = 0
            # 3) The decision on this fill bar's close.
            long = fs[0, S_POS] > 0.0
            if _decide(rule, x, y, close, p, q, entries, exits, t, long):
                act = _pend(fs, long, size_frac)
                due = t + latency
                created = t
            t += 1
            continue
        if act != 0:
            t += 1  # an order is pending: no decision until it fills
            continue
        # No order pending: only a decision bar changes anything, so scan to the next one in a tight loop.
        long = fs[0, S_POS] > 0.0
        t = _next_decision(rule, x, y, close, p, q, entries, exits, tradable, open_, t, t1, long)
        if t < t1:
            act = _pend(fs, long, size_frac)
            due = t + latency
            created = t
            t += 1
    cash[0] = c
    ist[0, P_ACTION] = act
    ist[0, P_DUE] = due
    ist[0, P_CREATED] = created
    return t, n_orders, n_segs


@njit(cache=True, nogil=True)
def add_repeated(s: float, x: float, count: int) -> float:
    """`count` additions of x to s, rounded exactly as a loop of `s += x` rounds them, in a few steps per binade.

    While s stays in one binade [2^(e-1), 2^e) every representable value is a multiple of its ulp u, so each
    `s += x` adds the same multiple d of u (x rounded to u), unless x is exactly halfway between two multiples,
    where ties-to-even alternates: those, and every case outside a normal binade, add one by one.
    """
    while count > 0:
        if count <= 8 or not (2.2250738585072014e-308 <= s < 1e300 and 0.0 <= x < s):
            s += x
            count -= 1
            continue
        _, e = math.frexp(s)
        u = math.ldexp(1.0, e - 53)
        q = x / u  # exact: a power-of-two scaling
        if q - math.floor(q) == 0.5:
            s += x
            count -= 1
            continue
        d = (s + x) - s  # exact: both are multiples of u
        if d == 0.0:
            return s  # x is under half an ulp of s: no addition changes s, now or later
        # Steps whose exact sums s + i * d + x all stay below 2^e (two spare for the rounding of this estimate).
        j = min(int((math.ldexp(1.0, e) - s - x) / d) - 2, count)
        if j <= 0:
            s += x
            count -= 1
            continue
        s += j * d  # exact: j * d is a multiple of u and s + j * d stays in the binade
        count -= j
    return s


@njit(cache=True, nogil=True, error_model="numpy")
def _segment_stats(
    segs: np.ndarray,
    n_segs: int,
    close: np.ndarray,
    ts: np.ndarray,
    initial: float,
    t_before: float,
    stats: np.ndarray,
    need: int,
) -> None:
    """The stats row of `_return_stats_kernel` and `_drawdown_kernel` over the equity the segments describe.

    Each bar's equity is the simulator's mark (`cash`, plus `position * close` when holding) and each return,
    sum and comparison is the metric kernels' own, in bar order. Flat bars after a segment's first one have a
    return of exactly 0 (x / x - 1 for a finite x > 0) and a constant equity, so the first pass skips them in
    O(1); the second adds their (0 - mean)^2 with `add_repeated`, rounded as the metric kernel's loop rounds it.
    The deepest drawdown below a finite positive peak is taken once, at the episode's lowest equity (see below).
    `need` (NEED_*) says which parts to compute; the others are left NaN (0 bars for the drawdown length).
    """
    n = close.shape[0]
    returns = (need & NEED_RETURNS) != 0
    drawdown = (need & NEED_DRAWDOWN) != 0
    if not returns and not drawdown:
        _final_and_held(segs, n_segs, close, initial, stats)
        return
    prev = initial
    total = 0.0
    finite = True
    peak = initial
    peak_idx = 0
    peak_t = t_before
    underwater = False
    max_dd = 0.0
    # The lowest equity since the peak whose drawdown is not yet in max_dd (inf: none). For a fixed peak p, finite
    # and > 0, (p - v) / p never decreases as v falls (both roundings are monotonic), so the kernel's per-bar
    # max over an episode equals this one division at its lowest v: one division per episode instead of per bar.
    trough = math.inf
    lazy = initial > 0.0 and initial < math.inf
    max_len = 0
    max_ms = 0.0
    held = 0
    value = initial
    for s in range(n_segs):
        start = int(segs[s, SEG_START])
        end = int(segs[s + 1, SEG_START]) if s + 1 < n_segs else n
        c = segs[s, SEG_CASH]
        pos = segs[s, SEG_POS]
        flat = pos == 0.0
        quick = flat and c > 0.0 and math.isfinite(c)
        stop = start + 1 if quick else end
        for k in range(start, min(stop, end)):
            value = c
            if not flat:
                value += pos * close[k, 0]
                held += 1
            if returns:
                r = value / prev - 1.0
                if finite:
                    if not math.isfinite(r):
                        finite = False
                    else:
                        total += r
                prev = value
            if not drawdown:
                continue
            if value >= peak:
                if underwater:
                    max_len = max(max_len, k + 1 - peak_idx)
                    max_ms = max(max_ms, float(ts[k]) - peak_t)
                    underwater = False
                if trough < math.inf:
                    max_dd = max(max_dd, (peak - trough) / peak)
                    trough = math.inf
                peak = value
                peak_idx = k + 1
                peak_t = float(ts[k])
                lazy = peak > 0.0 and peak < math.inf
            else:
                underwater = True
                if lazy and value == value:
                    trough = min(trough, value)
                elif peak > 0.0:
                    # A NaN equity or an infinite peak: the kernel's own division, after the pending one.
                    if trough < math.inf:
                        max_dd = max(max_dd, (peak - trough) / peak)
                        trough = math.inf
                    max_dd = max(max_dd, (peak - value) / peak)
        if drawdown and quick and end > start + 1 and not underwater:
            # The flat run's later bars each equal the peak: no episode closes, the peak only moves on.
            peak_idx = end
            peak_t = float(ts[end - 1])
    if trough < math.inf:
        max_dd = max(max_dd, (peak - trough) / peak)
    if underwater:
        max_len = max(max_len, n - peak_idx)
        max_ms = max(max_ms, float(ts[n - 1]) - peak_t)
    mean = math.nan
    std = math.nan
    downside = math.nan
    if returns and finite:
        mean = total / n
        prev = initial
        sq = 0.0
        down = 0.0
        zero_sq = (0.0 - mean) * (0.0 - mean)
        for s in range(n_segs):
            start = int(segs[s, SEG_START])
            end = int(segs[s + 1, SEG_START]) if s + 1 < n_segs else n
            c = segs[s, SEG_CASH]
            pos = segs[s, SEG_POS]
            flat = pos == 0.0
            stop = start + 1 if flat else end
            for k in range(start, min(stop, end)):
                v = c
                if not flat:
                    v += pos * close[k, 0]
                r = v / prev - 1.0
                sq += (r - mean) * (r - mean)
                if r < 0.0:
                    down += r * r
                prev = v
            if flat and end > start + 1:
                # Finite returns imply c != 0 here: each later flat bar's return is exactly 0.
                sq = add_repeated(sq, zero_sq, end - start - 1)
        std = math.sqrt(sq / (n - 1)) if n >= 2 else math.nan
        downside = math.sqrt(down / n)
    stats[ST_FINAL] = value
    stats[ST_FINITE] = 1.0 if finite else 0.0
    stats[ST_MEAN] = mean
    stats[ST_STD] = std
    stats[ST_DOWNSIDE] = downside
    stats[ST_MAX_DD] = max_dd if drawdown else math.nan
    stats[ST_MAX_LEN] = max_len
    stats[ST_MAX_MS] = max_ms if drawdown else math.nan
    stats[ST_IN_MARKET] = held


@njit(cache=True, nogil=True, error_model="numpy")
def _final_and_held(segs: np.ndarray, n_segs: int, close: np.ndarray, initial: float, stats: np.ndarray) -> None:
    """`_segment_stats` with neither part needed: the last bar's equity and the bars held, in O(segments)."""
    n = close.shape[0]
    value = initial
    held = 0
    for s in range(n_segs):
        start = int(segs[s, SEG_START])
        end = int(segs[s + 1, SEG_START]) if s + 1 < n_segs else n
        if end <= start:
            continue
        c = segs[s, SEG_CASH]
        pos = segs[s, SEG_POS]
        # The stats pass's own expression for the segment's last bar (cash, plus the position marked when held).
        value = c
        if pos != 0.0:
            value += pos * close[end - 1, 0]
            held += end - start
    stats[ST_FINAL] = value
    stats[ST_FINITE] = 1.0
    stats[ST_MEAN] = math.nan
    stats[ST_STD] = math.nan
    stats[ST_DOWNSIDE] = math.nan
    stats[ST_MAX_DD] = math.nan
    stats[ST_MAX_LEN] = 0
    stats[ST_MAX_MS] = math.nan
    stats[ST_IN_MARKET] = held


@njit(cache=True, nogil=True, error_model="numpy")
def _run_fused(
    rule: int,
    x: np.ndarray,
    y: np.ndarray,
    p: float,
    q: float,
    entries: np.ndarray,
    exits: np.ndarray,
    open_: np.ndarray,
    close: np.ndarray,
    tradable: np.ndarray,
    size_frac: float,
    taker_fee: float,
    slippage: float,
    latency: int,
    initial_cash: float,
    timestamp: np.ndarray,
    t_before: float,
    orders: np.ndarray,
    n_orders: int,
    segs: np.ndarray,
    stats: np.ndarray,
    need: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """`run_rule` compiled for one rule (a literal): its dispatch in the scan and fill loop folds away."""
    literally(rule)
    n = close.shape[0]
    cash, fstate, istate = new_state(1, initial_cash)
    segs[0, SEG_START] = 0
    segs[0, SEG_CASH] = initial_cash
    segs[0, SEG_POS] = 0.0
    n_segs = 1
    done = 0
    while done < n:
        reached, n_orders, n_segs = _simulate_cross(
            done,
            n,
            rule,
            x,
            y,
            close,
            p,
            q,
            entries,
            exits,
            open_,
            tradable,
            size_frac,
            taker_fee,
            slippage,
            latency,
            cash,
            fstate,
            istate,
            orders,
            n_orders,
            segs,
            n_segs,
        )
        if reached < n and n_orders + 2 > orders.shape[0]:
            grown = np.empty((orders.shape[0] * 2, N_COLS))
            grown[:n_orders] = orders[:n_orders]
            orders = grown
        if reached < n and n_segs + 2 > segs.shape[0]:
            more = np.empty((segs.shape[0] * 2, N_SEG))
            more[:n_segs] = segs[:n_segs]
            segs = more
        done = reached
    _segment_stats(segs, n_segs, close, timestamp, initial_cash, t_before, stats, need)
    return orders, segs, n_orders


@njit(cache=True, nogil=True, error_model="numpy")
def run_rule(
    rule: int,
    x: np.ndarray,
    y: np.ndarray,
    p: float,
    q: float,
    entries: np.ndarray,
    exits: np.ndarray,
    open_: np.ndarray,
    close: np.ndarray,
    tradable: np.ndarray,
    size_frac: float,
    taker_fee: float,
    slippage: float,
    latency: int,
    initial_cash: float,
    timestamp: np.ndarray,
    t_before: float,
    orders: np.ndarray,
    n_orders: int,
    segs: np.ndarray,
    stats: np.ndarray,
    need: int = NEED_ALL,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One single-symbol long-only combination without stops: simulate, then reduce, with no per-bar array.

    The signals come from `rule` (see `_decide`): x, y, p, q as it reads them, entries/exits for RULE_FLAGS;
    `need` the parts of the stats row to compute (NEED_*).
    Returns the order buffer and segment buffer (grown when they filled up) and the order row count.
    """
    if rule == RULE_CROSS:
        return _run_fused(
            RULE_CROSS,
            x,
            y,
            p,
            q,
            entries,
            exits,
            open_,
            close,
            tradable,
            size_frac,
            taker_fee,
            slippage,
            latency,
            initial_cash,
            timestamp,
            t_before,
            orders,
            n_orders,
            segs,
            stats,
            need,
        )
    if rule == RULE_LEVEL:
        return _run_fused(
            RULE_LEVEL,
            x,
            y,
            p,
            q,
            entries,
            exits,
            open_,
            close,
            tradable,
            size_frac,
            taker_fee,
            slippage,
            latency,
            initial_cash,
            timestamp,
            t_before,
            orders,
            n_orders,
            segs,
            stats,
            need,
        )
    if rule == RULE_BAND:
        return _run_fused(
            RULE_BAND,
            x,
            y,
            p,
            q,
            entries,
            exits,
            open_,
            close,
            tradable,
            size_frac,
            taker_fee,
            slippage,
            latency,
            initial_cash,
            timestamp,
            t_before,
            orders,
            n_orders,
            segs,
            stats,
            need,
        )
    if rule == RULE_BREAKOUT:
        return _run_fused(
            RULE_BREAKOUT,
            x,
            y,
            p,
            q,
            entries,
            exits,
            open_,
            close,
            tradable,
            size_frac,
            taker_fee,
            slippage,
            latency,
            initial_cash,
            timestamp,
            t_before,
            orders,
            n_orders,
            segs,
            stats,
            need,
        )
    return _run_fused(
        RULE_FLAGS,
        x,
        y,
        p,
        q,
        entries,
        exits,
        open_,
        close,
        tradable,
        size_frac,
        taker_fee,
        slippage,
        latency,
        initial_cash,
        timestamp,
        t_before,
        orders,
        n_orders,
        segs,
        stats,
        need,
    )


NO_FLAGS = np.zeros((1, 1), dtype=np.bool_)
NO_SERIES = np.zeros(1)


@njit(cache=True, nogil=True, error_model="numpy")
def run_cross(
    a: np.ndarray,
    b: np.ndarray,
    open_: np.ndarray,
    close: np.ndarray,
    tradable: np.ndarray,
    size_frac: float,
    taker_fee: float,
    slippage: float,
    latency: int,
    initial_cash: float,
    timestamp: np.ndarray,
    t_before: float,
    orders: np.ndarray,
    n_orders: int,
    segs: np.ndarray,
    stats: np.ndarray,
    need: int = NEED_ALL,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One single-symbol crossover combination without stops (a crossing above b enters, below exits): `run_rule`."""
    return run_rule(
        RULE_CROSS,
        a,
        b,
        0.0,
        0.0,
        NO_FLAGS,
        NO_FLAGS,
        open_,
        close,
        tradable,
        size_frac,
        taker_fee,
        slippage,
        latency,
        initial_cash,
        timestamp,
        t_before,
        orders,
        n_orders,
        segs,
        stats,
        need,
    )


@njit(cache=True, nogil=True, error_model="numpy")
def run_flags(
    entries: np.ndarray,
    exits: np.ndarray,
    open_: np.ndarray,
    close: np.ndarray,
    tradable: np.ndarray,
    size_frac: float,
    taker_fee: float,
    slippage: float,
    latency: int,
    initial_cash: float,
    timestamp: np.ndarray,
    t_before: float,
    orders: np.ndarray,
    n_orders: int,
    segs: np.ndarray,
    stats: np.ndarray,
    need: int = NEED_ALL,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One single-symbol long-only combination without stops from its (n, 1) entries/exits; see `run_rule`."""
    return run_rule(
        RULE_FLAGS,
        NO_SERIES,
        NO_SERIES,
        0.0,
        0.0,
        entries,
        exits,
        open_,
        close,
        tradable,
        size_frac,
        taker_fee,
        slippage,
        latency,
        initial_cash,
        timestamp,
        t_before,
        orders,
        n_orders,
        segs,
        stats,
        need,
    )
