"""Vectorized path: `SmaCross` through `run_backtest` against vectorbt's `Portfolio.from_signals`.

Both sides are timed over the same scope: indicators + crossover signals + simulation + final value
(cracktrader additionally computes its full metrics, which only makes the comparison harder for it).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from benchlib import (
    FAST,
    FEE,
    INITIAL_CASH,
    PERIODS_PER_YEAR,
    SLOW,
    SYMBOL,
    Market,
    Row,
    Section,
    fmt_rate,
    interleaved,
    make_market,
    print_section,
    rel_diff,
)

TARGET_RATIO = 5.0  # issue 9: at least 5x vectorbt
TARGET_RATE = 15e6
TARGET_REL_DIFF = 1e-6


def cracktrader_runner(market: Market, strategy: str = "SmaCross") -> Callable[[], Any]:
    """A closure running one full cracktrader backtest (align + signals + simulation + metrics)."""
    from cracktrader.engine.backtest import run_backtest
    from cracktrader.engine.broker import SimSettings
    from cracktrader.engine.market import align
    from cracktrader.strategies import builtin

    cls = getattr(builtin, strategy)
    settings = SimSettings(initial_cash=INITIAL_CASH, maker_fee=FEE, taker_fee=FEE, slippage=0.0, latency=1)

    def run() -> Any:
        data = align({SYMBOL: market}, PERIODS_PER_YEAR)
        return run_backtest(cls(fast=FAST, slow=SLOW), data, settings)

    return run


def _next_bar(signal: np.ndarray) -> np.ndarray:
    """A decision at bar t's close becomes an order at bar t+1 (vectorbt fills on the signal's bar)."""
    out = np.zeros_like(signal)
    out[1:] = signal[:-1]
    return out


def _vbt_portfolio(market: Market, entries: np.ndarray, exits: np.ndarray) -> Any:
    import vectorbt as vbt

    return vbt.Portfolio.from_signals(
        market.close,
        _next_bar(entries),
        _next_bar(exits),
        price=market.open,  # filled at the open of the bar after the signal
        fees=FEE,
        size=np.inf,  # all in: vectorbt buys cash / (price * (1 + fees)), as cracktrader does
        init_cash=INITIAL_CASH,
    )


def vbt_talib_runner(market: Market) -> Callable[[], float]:
    """vectorbt given the same SMAs cracktrader uses (`engine.indicators.sma`), its own crossover and simulator."""
    from vectorbt.generic import nb as vbt_nb

    from cracktrader.engine.indicators import sma

    def run() -> float:
        fast = sma(market.close, FAST)
        slow = sma(market.close, SLOW)
        entries = vbt_nb.crossed_above_1d_nb(fast, slow)
        exits = vbt_nb.crossed_above_1d_nb(slow, fast)
        return float(_vbt_portfolio(market, entries, exits).final_value())

    return run


def vbt_ma_runner(market: Market) -> Callable[[], float]:
    """vectorbt the way its docs write it: `vbt.MA.run` and the indicator's `ma_crossed_above/below`."""
    import vectorbt as vbt

    def run() -> float:
        fast = vbt.MA.run(market.close, FAST, short_name="fast")
        slow = vbt.MA.run(market.close, SLOW, short_name="slow")
        entries = np.asarray(fast.ma_crossed_above(slow)).reshape(-1)
        exits = np.asarray(fast.ma_crossed_below(slow)).reshape(-1)
        return float(_vbt_portfolio(market, entries, exits).final_value())

    return run


def tie_diagnostics(market: Market) -> list[str]:
    """Why vbt.MA can disagree: bars where its SMAs and cracktrader's put fast and slow on different sides."""
    import vectorbt as vbt

    from cracktrader.engine.indicators import sma

    fast_t, slow_t = sma(market.close, FAST), sma(market.close, SLOW)
    fast_v = np.asarray(vbt.MA.run(market.close, FAST).ma).reshape(-1)
    slow_v = np.asarray(vbt.MA.run(market.close, SLOW).ma).reshape(-1)
    valid = ~np.isnan(slow_t)
    flips = np.flatnonzero(valid & ((fast_t > slow_t) != (fast_v > slow_v)))
    gap = np.abs(fast_t - slow_t)[flips]
    out = [
        f"bars where cracktrader's exact SMA fast == slow: {int(np.sum(fast_t == slow_t))}; vectorbt's crossover "
        "differs from cracktrader's only at exact ties and on the first bar after the NaN warm-up",
        f"vbt.MA vs cracktrader SMA: max abs difference {np.nanmax(np.abs(fast_t - fast_v)):.1e} (fast), "
        f"{np.nanmax(np.abs(slow_t - slow_v)):.1e} (slow); fast-vs-slow side differs on {flips.size} bar(s)"
        + (f" {flips[:5].tolist()} where |fast - slow| <= {gap.max():.1e}" if flips.size else ""),
    ]
    if flips.size:
        out.append("  -> " + _exact_tie_check(market.close, flips))
    return out


def _exact_tie_check(close: np.ndarray, bars: np.ndarray) -> str:
    """Check in integer cents whether mean(fast window) == mean(slow window) holds exactly at `bars`."""
    cents = np.round(close * 100.0)
    if not np.allclose(cents / 100.0, close, rtol=0.0, atol=1e-9) or cents.max() * SLOW > 2**53:
        return "prices are not on a 0.01 grid; cannot check for exact ties"
    c = cents.astype(np.int64)
    ties = sum(int(SLOW * c[i - FAST + 1 : i + 1].sum() == FAST * c[i - SLOW + 1 : i + 1].sum()) for i in bars.tolist())
    return (
        f"{ties} of {bars.size} such bars are exact ties in integer cents (mean of {FAST} == mean of {SLOW}): "
        "cracktrader's window sums are exact, so a tie is never a cross; vectorbt's running-sum rolling mean "
        "rounds the tie either way, the crossover flips and the trades diverge. Given the same SMAs, vectorbt "
        "matches."
    )


def breakdown(market: Market, repeats: int) -> list[str]:
    """Where the vectorized path spends its time (uses engine internals; informational only)."""
    try:
        return _breakdown(market, repeats)
    except Exception as exc:  # engine internals changed: the breakdown is informational only
        return [f"breakdown unavailable: {type(exc).__name__}: {exc}"]


def _breakdown(market: Market, repeats: int) -> list[str]:
    try:
        from cracktrader.engine import backtest as bt
        from cracktrader.engine.broker import SimSettings
        from cracktrader.engine.market import align
        from cracktrader.engine.metrics import compute_metrics
        from cracktrader.engine.records import O_FEE, O_PNL, O_RETURN, O_STATUS, STATUS_FILLED
        from cracktrader.strategies.builtin import SmaCross
    except ImportError as exc:
        return [f"breakdown unavailable: {exc}"]
    settings = SimSettings(initial_cash=INITIAL_CASH, maker_fee=FEE, taker_fee=FEE)
    data = align({SYMBOL: market}, PERIODS_PER_YEAR)
    strategy = SmaCross(fast=FAST, slow=SLOW)
    n = data.n_bars
    state: dict[str, Any] = {}

    arrays = bt.signal_arrays(strategy, data)

    def kernel() -> None:
        sim = bt.simulate_arrays(data, arrays, settings)
        state.update(equity=sim.equity, cash=sim.cash, in_market=sim.in_market, orders=sim.orders)

    kernel()
    filled = state["orders"][state["orders"][:, O_STATUS] == STATUS_FILLED]
    closing = filled[~np.isnan(filled[:, O_PNL])]

    def metrics() -> None:
        compute_metrics(
            equity=state["equity"],
            initial_cash=settings.initial_cash,
            timestamps_ms=data.timestamp,
            periods_per_year=data.periods_per_year,
            trade_pnls=closing[:, O_PNL],
            trade_returns=closing[:, O_RETURN],
            fees_paid=float(filled[:, O_FEE].sum()),
            in_market=state["in_market"],
            buy_and_hold_return=0.0,
        )

    def result() -> None:
        positions = [(0, 0.0, 0.0)]
        bt._result(
            data, settings, state["equity"], state["cash"], state["in_market"], state["orders"],
            positions, n, "vectorized",
        )  # fmt: skip

    total = cracktrader_runner(market)
    stages = {
        "total run_backtest": total,
        "signals (2 exact SMAs + 2 crossovers)": lambda: strategy.signals(data.bars(0)),
        "kernel (simulate_signals, 4 chunks)": kernel,
        "_result (order filters + metrics + buy&hold)": result,
        "  of which compute_metrics": metrics,
    }
    t = interleaved(stages, max(repeats, 5))
    whole = t["total run_backtest"].best
    return [f"{name}: {tm.best * 1e3:.1f} ms best ({tm.best / whole:.0%} of total)" for name, tm in t.items()]


def run(market: Market, repeats: int = 7) -> Section:
    n = len(market)
    ct = cracktrader_runner(market)
    headline, idiomatic = "vbt (same SMA)", "vbt (vbt.MA)"
    peers = {headline: vbt_talib_runner(market), idiomatic: vbt_ma_runner(market)}
    # Warm-up: JIT compilation (or loading it from the disk cache), page faults, allocator pools.
    ct_value = ct().final_value
    peer_values = {name: fn() for name, fn in peers.items()}
    timings = interleaved({"cracktrader": ct, **peers}, repeats)
    ct_t = timings["cracktrader"]
    ct_rate = n / ct_t.best
    section = Section()
    for name in peers:
        peer_rate = n / timings[name].best
        ratio = ct_rate / peer_rate
        main_row = name == headline
        section.rows.append(
            Row(
                f"1. vectorized SmaCross {n:,} bars" + ("" if main_row else " (info)"),
                fmt_rate(ct_rate),
                f"vectorbt, {name[5:-1]}",
                fmt_rate(peer_rate),
                f"{ratio:.2f}x",
                ">= 5x vbt, >= 15 M bars/s" if main_row else "-",
                (ratio >= TARGET_RATIO and ct_rate >= TARGET_RATE) if main_row else None,
            )
        )
    for name, value in peer_values.items():
        diff = rel_diff(ct_value, value)
        section.rows.append(
            Row(
                "1b. final value vs vectorbt" + ("" if name == headline else " (info)"),
                f"{ct_value:,.6f}",
                f"vectorbt, {name[5:-1]}",
                f"{value:,.6f}",
                f"rel diff {diff:.1e}",
                "<= 1e-6" if name == headline else "-",
                diff <= TARGET_REL_DIFF if name == headline else None,
            )
        )
    section.notes += [
        f"timing: one warm-up run each (JIT), then {repeats} interleaved rounds; best of {repeats} reported",
        f"cracktrader: {ct_t.describe(n)}; scope align + signals + kernel + metrics + result",
        *(f"{k}: {timings[k].describe(n)}; scope SMAs + crossovers + from_signals + final_value" for k in peers),
        "vectorbt setup: entries/exits = its crossovers shifted one bar, price=open, fees=0.0001, "
        f"size=np.inf, init_cash={INITIAL_CASH:,.0f}; engine numba (vectorbt-rust not installed)",
        *tie_diagnostics(market),
        f"final values: cracktrader {ct_value!r}, " + ", ".join(f"{k} {v!r}" for k, v in peer_values.items()),
    ]
    section.data.update(
        ct_final=ct_value,
        peer_finals=peer_values,
        ct_best_s=ct_t.best,
        peer_best_s={k: timings[k].best for k in peers},
    )
    if not math.isfinite(ct_value):
        section.notes.append("cracktrader final value is not finite!")
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--breakdown", action="store_true", help="also time the engine's stages")
    args = parser.parse_args()
    market = make_market()
    section = run(market, args.repeats)
    if args.breakdown:
        section.notes += breakdown(market, args.repeats)
    print_section("vectorized", section)


if __name__ == "__main__":
    main()
