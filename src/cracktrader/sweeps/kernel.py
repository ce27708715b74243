"""Compiled sweep kernels: many combinations per call, each through the backtest's own simulator and metric kernels.

Nothing here decides a fill or a metric: `kernels.simulate_signals` (and through it `accounting.apply_fill`)
simulates, `metrics._return_stats_kernel` and `metrics._drawdown_kernel` reduce the equity curve. A combination's
curve lives in per-thread scratch arrays of one bar length, so memory never grows with bars x combinations.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cracktrader.engine.indicators import crosses
from cracktrader.engine.kernels import new_state, simulate_signals
from cracktrader.engine.metrics import _drawdown_kernel, _return_stats_kernel
from cracktrader.engine.records import N_COLS

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
def cross_block(
    columns: np.ndarray,
    fast_idx: np.ndarray,
    slow_idx: np.ndarray,
    risk: np.ndarray,
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
    offsets: np.ndarray,
    stats: np.ndarray,
) -> np.ndarray:
    """A block of crossover combinations: entries where column `fast_idx[c]` crosses above `slow_idx[c]`, exits below.

    `columns` is (distinct indicators, symbols, bars); `risk` rows are (size, stop_loss, take_profit) as the
    backtest stacks them. Combination c's order rows are orders[offsets[c]:offsets[c + 1]]. Returns the buffer.
    """
    n, m = close.shape
    no_short = np.zeros((1, 1), dtype=np.bool_)
    size = np.empty((1, 1))
    stop_loss = np.empty((1, 1))
    take_profit = np.empty((1, 1))
    n_orders = offsets[0]
    for c in range(fast_idx.shape[0]):
        # The strategy's `crossed_above` / `crossed_below`, bar by bar through the same `crosses`.
        eventful[0] = False
        for j in range(m):
            a = columns[fast_idx[c], j]
            b = columns[slow_idx[c], j]
            entries[0, j] = False
            exits[0, j] = False
            for t in range(1, n):
                up = crosses(a[t - 1], a[t], b[t - 1], b[t], True)
                down = crosses(a[t - 1], a[t], b[t - 1], b[t], False)
                entries[t, j] = up
                exits[t, j] = down
                # A bar where any symbol has a signal, as `backtest._eventful_bars` marks it.
                eventful[t] = (up or down) if j == 0 else (eventful[t] or up or down)
        size[0, 0] = risk[c, 0]
        stop_loss[0, 0] = risk[c, 1]
        take_profit[0, 0] = risk[c, 2]
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
            n_orders,
            stats[c],
        )
        offsets[c + 1] = n_orders
    return orders
