"""Hand-computed fills, fees, sizing and exits of the compiled (vectorized) simulator."""

from __future__ import annotations

import numpy as np
import pytest

from cracktrader.engine.backtest import run_backtest
from cracktrader.engine.broker import SimSettings
from cracktrader.engine.records import (
    O_BAR,
    O_CREATED,
    O_FEE,
    O_PNL,
    O_PRICE,
    O_QTY,
    O_REASON,
    O_STATUS,
    REASON_INSUFFICIENT_CASH,
    REASON_STOP_LOSS,
    REASON_TAKE_PROFIT,
    STATUS_FILLED,
    STATUS_REJECTED,
)
from cracktrader.engine.strategy import Signals
from engine_helpers import flags, market, with_signals

FLAT = (100.0, 101.0, 99.0, 100.0)
ROWS = [FLAT, (102.0, 104.0, 101.0, 103.0), (104.0, 106.0, 103.0, 105.0), (110.0, 111.0, 108.0, 109.0)]


def test_entry_fills_at_next_open_with_exact_all_in_size() -> None:
    data = market(("BTC/USDT", ROWS))
    strat = with_signals(**{"BTC/USDT": Signals(entries=flags(4, 0))})
    res = run_backtest(strat, data, SimSettings(initial_cash=10_000, taker_fee=0.001))
    (order,) = res.orders
    qty = 10_000 / (102.0 * 1.001)
    assert order[O_CREATED] == 0 and order[O_BAR] == 1
    assert order[O_PRICE] == 102.0
    assert order[O_QTY] == pytest.approx(qty, rel=1e-12)
    assert order[O_FEE] == pytest.approx(qty * 102.0 * 0.001, rel=1e-12)
    assert res.cash[1] == pytest.approx(0.0, abs=1e-9)
    assert res.equity[0] == 10_000.0
    assert res.equity[3] == pytest.approx(qty * 109.0, rel=1e-12)


def test_round_trip_pnl_is_net_of_entry_and_exit_fees() -> None:
    data = market(("BTC/USDT", ROWS))
    strat = with_signals(**{"BTC/USDT": Signals(entries=flags(4, 0), exits=flags(4, 2))})
    res = run_backtest(strat, data, SimSettings(initial_cash=10_000, taker_fee=0.001))
    _buy, sell = res.orders
    qty = 10_000 / (102.0 * 1.001)
    proceeds = qty * 110.0
    assert sell[O_PRICE] == 110.0 and sell[O_BAR] == 3
    assert sell[O_PNL] == pytest.approx(proceeds * 0.999 - 10_000, rel=1e-12)
    assert res.final_value == pytest.approx(proceeds * 0.999, rel=1e-12)
    assert res.metrics["total_trades"] == 1
    assert res.metrics["fees_paid"] == pytest.approx(qty * 102.0 * 0.001 + proceeds * 0.001, rel=1e-12)
    assert res.metrics["win_rate"] == 1.0


def test_slippage_moves_both_fills_against_the_trader() -> None:
    data = market(("BTC/USDT", ROWS))
    strat = with_signals(**{"BTC/USDT": Signals(entries=flags(4, 0), exits=flags(4, 2))})
    res = run_backtest(strat, data, SimSettings(taker_fee=0.0, slippage=0.001))
    buy, sell = res.orders
    assert buy[O_PRICE] == pytest.approx(102.0 * 1.001)
    assert sell[O_PRICE] == pytest.approx(110.0 * 0.999)


def test_latency_of_two_bars_fills_two_opens_after_the_decision() -> None:
    data = market(("BTC/USDT", ROWS))
    strat = with_signals(**{"BTC/USDT": Signals(entries=flags(4, 0))})
    res = run_backtest(strat, data, SimSettings(latency=2))
    assert res.orders[0][O_BAR] == 2
    assert res.orders[0][O_PRICE] == 104.0


def test_stop_loss_fills_at_stop_level_when_low_touches_it() -> None:
    rows = [FLAT, (100.0, 101.0, 99.5, 100.0), (100.0, 100.5, 94.0, 95.0), FLAT]
    strat = with_signals(**{"X": Signals(entries=flags(4, 0), stop_loss=0.05)})
    res = run_backtest(strat, market(("X", rows)), SimSettings(taker_fee=0.0))
    sl = res.orders[1]
    assert sl[O_REASON] == REASON_STOP_LOSS and sl[O_BAR] == 2
    assert sl[O_PRICE] == pytest.approx(95.0)


def test_stop_loss_gapped_through_fills_at_the_worse_open() -> None:
    rows = [FLAT, (100.0, 101.0, 99.5, 100.0), (90.0, 92.0, 89.0, 91.0), FLAT]
    strat = with_signals(**{"X": Signals(entries=flags(4, 0), stop_loss=0.05)})
    res = run_backtest(strat, market(("X", rows)), SimSettings(taker_fee=0.0))
    assert res.orders[1][O_PRICE] == 90.0


def test_take_profit_fills_at_limit_and_pays_maker_fee() -> None:
    rows = [FLAT, (100.0, 101.0, 99.5, 100.0), (100.0, 111.0, 99.0, 105.0), FLAT]
    strat = with_signals(**{"X": Signals(entries=flags(4, 0), take_profit=0.10)})
    res = run_backtest(strat, market(("X", rows)), SimSettings(maker_fee=0.0002, taker_fee=0.001))
    tp = res.orders[1]
    assert tp[O_REASON] == REASON_TAKE_PROFIT
    assert tp[O_PRICE] == pytest.approx(110.0)
    assert tp[O_FEE] == pytest.approx(tp[O_QTY] * 110.0 * 0.0002)


def test_bar_touching_stop_and_target_assumes_the_stop_first() -> None:
    rows = [FLAT, (100.0, 101.0, 99.5, 100.0), (100.0, 120.0, 80.0, 100.0), FLAT]
    strat = with_signals(**{"X": Signals(entries=flags(4, 0), stop_loss=0.05, take_profit=0.05)})
    res = run_backtest(strat, market(("X", rows)), SimSettings())
    assert res.orders[1][O_REASON] == REASON_STOP_LOSS


def test_symbols_share_one_cash_balance() -> None:
    data = market(("A", ROWS), ("B", ROWS))
    sig = Signals(entries=flags(4, 0), size=0.5)
    res = run_backtest(with_signals(A=sig, B=sig), data, SimSettings(taker_fee=0.0))
    a, b = res.orders
    assert a[O_QTY] * 102.0 == pytest.approx(5_000.0)
    assert b[O_QTY] * 102.0 == pytest.approx(2_500.0)  # half of what A left
    assert res.cash[1] == pytest.approx(2_500.0)


def test_entry_without_cash_is_rejected_with_reason() -> None:
    data = market(("A", ROWS), ("B", ROWS))
    res = run_backtest(
        with_signals(A=Signals(entries=flags(4, 0)), B=Signals(entries=flags(4, 0))), data, SimSettings()
    )
    assert res.orders[0][O_STATUS] == STATUS_FILLED
    assert res.orders[1][O_STATUS] == STATUS_REJECTED
    assert res.orders[1][O_REASON] == REASON_INSUFFICIENT_CASH


def test_short_signals_are_ignored_unless_shorting_is_enabled() -> None:
    data = market(("X", ROWS))
    sig = Signals(entries=flags(4), short_entries=flags(4, 0), short_exits=flags(4, 2))
    assert len(run_backtest(with_signals(X=sig), data, SimSettings()).orders) == 0
    res = run_backtest(with_signals(X=sig), data, SimSettings(allow_short=True, taker_fee=0.0))
    short, cover = res.orders
    qty = 10_000 / 102.0
    assert short[O_QTY] == pytest.approx(qty)
    assert cover[O_PNL] == pytest.approx(qty * (102.0 - 110.0))
    assert res.final_value == pytest.approx(10_000 + qty * (102.0 - 110.0))


def test_cash_and_position_never_go_negative_on_spot() -> None:
    rng = np.random.default_rng(3)
    n = 500
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    rows = [(c, c * 1.01, c * 0.99, c) for c in close]
    sig = Signals(entries=rng.random(n) < 0.1, exits=rng.random(n) < 0.1, stop_loss=0.02, take_profit=0.03)
    res = run_backtest(with_signals(X=sig), market(("X", rows)), SimSettings(taker_fee=0.002, slippage=0.001))
    assert res.cash.min() >= 0.0
    assert res.equity.min() > 0.0
    assert len(res.orders) > 20
