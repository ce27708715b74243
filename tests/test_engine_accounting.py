"""One fill accounting: both simulators give identical fills and equity on the same decisions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cracktrader.engine.accounting import N_BOOK, apply_fill
from cracktrader.engine.backtest import BacktestResult, run_backtest
from cracktrader.engine.broker import SimSettings
from cracktrader.engine.context import Context
from cracktrader.engine.market import Bars, align
from cracktrader.engine.records import (
    O_BAR,
    O_FEE,
    O_PNL,
    O_PRICE,
    O_QTY,
    O_SIDE,
    O_STATUS,
    O_SYMBOL,
    STATUS_FILLED,
)
from cracktrader.engine.strategy import Signals, Strategy
from engine_helpers import random_walk, with_signals


class Replay(Strategy):
    """Event-driven strategy taking exactly the decisions the compiled kernel takes from `plan`'s signals."""

    plan: dict[str, Signals] = {}  # noqa: RUF012 - set per test through `replay`
    allow_short = False

    def indicators(self, bars: Bars) -> dict[str, np.ndarray]:
        sig = self.plan[bars.symbol]
        n = len(bars)
        zeros = np.zeros(n, dtype=np.bool_)
        return {
            "entry": sig.entries,
            "exit": zeros if sig.exits is None else sig.exits,
            "short_entry": zeros if sig.short_entries is None else sig.short_entries,
            "short_exit": zeros if sig.short_exits is None else sig.short_exits,
        }

    def on_bar(self, ctx: Context) -> None:
        for s in ctx.symbols:
            if any(o.reason == "signal" for o in ctx.open_orders(s)):
                continue  # the kernel holds one pending decision per symbol
            sig = self.plan[s]
            entry, exit_ = ctx.indicator("entry", s), ctx.indicator("exit", s)
            short_entry, short_exit = ctx.indicator("short_entry", s), ctx.indicator("short_exit", s)
            pos = ctx.position(s)
            if pos > 0:
                if exit_ and not entry:
                    ctx.sell(s)
            elif pos < 0:
                if short_exit and not short_entry:
                    ctx.close_position(s)
            elif entry and not exit_:
                ctx.buy(s, fraction=float(sig.size or 1.0), stop_loss=sig.stop_loss, take_profit=sig.take_profit)  # type: ignore[arg-type]
            elif self.allow_short and short_entry and not short_exit:
                ctx.sell(s, fraction=float(sig.size or 1.0), stop_loss=sig.stop_loss, take_profit=sig.take_profit)  # type: ignore[arg-type]


def replay(allow_short: bool, **plan: Signals) -> Replay:
    cls = type("Replayed", (Replay,), {"plan": plan, "allow_short": allow_short})
    return cls()


def _fills(res: BacktestResult) -> np.ndarray:
    rows = res.orders[res.orders[:, O_STATUS] == STATUS_FILLED]
    cols = rows[:, [O_BAR, O_SYMBOL, O_SIDE, O_QTY, O_PRICE, O_FEE, O_PNL]]
    return cols[np.lexsort((cols[:, 2], cols[:, 1], cols[:, 0]))]


def _both(plan: dict[str, Signals], data_seed: int, settings_: SimSettings) -> tuple[BacktestResult, BacktestResult]:
    n = len(next(iter(plan.values())).entries)
    markets = {s: random_walk(n, seed=data_seed + k, vol=0.02) for k, s in enumerate(plan)}
    data = align(markets, 8760.0)
    vec = run_backtest(with_signals(**plan), data, settings_)
    evt = run_backtest(replay(settings_.allow_short, **plan), data, settings_)
    return vec, evt


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    fee=st.sampled_from([0.0, 0.001, 0.01, 0.2]),
    slippage=st.floats(0.0, 0.005),
    stop_loss=st.one_of(st.none(), st.floats(0.005, 0.2)),
    take_profit=st.one_of(st.none(), st.floats(0.005, 0.5)),
    size=st.floats(0.05, 1.0),
    allow_short=st.booleans(),
    symbols=st.integers(1, 3),
)
def test_random_signals_give_identical_fills_and_equity_on_both_simulators(
    seed: int,
    fee: float,
    slippage: float,
    stop_loss: float | None,
    take_profit: float | None,
    size: float,
    allow_short: bool,
    symbols: int,
) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    plan = {
        f"S{k}": Signals(
            entries=rng.random(n) < 0.15,
            exits=rng.random(n) < 0.15,
            short_entries=rng.random(n) < 0.1,
            short_exits=rng.random(n) < 0.1,
            stop_loss=stop_loss,
            take_profit=take_profit,
            size=size,
        )
        for k in range(symbols)
    }
    settings_ = SimSettings(maker_fee=fee / 2, taker_fee=fee, slippage=slippage, allow_short=allow_short)
    vec, evt = _both(plan, seed, settings_)
    assert len(_fills(vec)) > 0
    np.testing.assert_array_equal(_fills(evt), _fills(vec))
    np.testing.assert_array_equal(evt.equity, vec.equity)
    np.testing.assert_array_equal(evt.cash, vec.cash)


def test_equity_driven_to_dust_still_trades_identically() -> None:
    # A 20% fee per fill takes 10,000 to about 1e-40 in 200 round trips: tiny buys must book, not vanish.
    n = 900
    entries = np.zeros(n, dtype=np.bool_)
    exits = np.zeros(n, dtype=np.bool_)
    entries[0::4] = True
    exits[2::4] = True
    plan = {"X": Signals(entries=entries, exits=exits)}
    vec, evt = _both(plan, 3, SimSettings(maker_fee=0.2, taker_fee=0.2))
    np.testing.assert_array_equal(_fills(evt), _fills(vec))
    np.testing.assert_array_equal(evt.equity, vec.equity)
    assert 0.0 < vec.final_value < 1e-30
    assert len(_fills(vec)) == 2 * (n // 4)  # every entry and every exit filled


def test_partial_sells_that_add_up_to_the_position_close_it_exactly() -> None:
    book = np.zeros((1, N_BOOK))
    cash, *_ = apply_fill(book, 0, 1000.0, 1, 0.3, 100.0, 0.0)
    cash, *_ = apply_fill(book, 0, cash, -1, 0.1, 100.0, 0.0)
    cash, _qty, _fee, pnl, _ret, opened = apply_fill(book, 0, cash, -1, 0.2, 110.0, 0.0)
    assert book[0, 0] == 0.0 and book[0, 2] == 0.0
    assert opened == 0.0
    assert pnl == pytest.approx(0.2 * 10.0)
    assert cash == pytest.approx(1000.0 + 0.2 * 10.0)


def test_a_tiny_buy_books_its_position_instead_of_vanishing() -> None:
    book = np.zeros((1, N_BOOK))
    cash, _qty, _fee, *_ = apply_fill(book, 0, 1e-12, 1, 1e-17, 50_000.0, 0.001)
    assert book[0, 0] == 1e-17
    assert cash == pytest.approx(1e-12 - 1e-17 * 50_000.0 * 1.001, abs=1e-25)
