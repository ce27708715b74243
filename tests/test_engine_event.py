"""The event-driven simulator: order types, rejections, brackets and agreement with the compiled kernel."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cracktrader.engine.backtest import run_backtest
from cracktrader.engine.broker import BarContext, SimSettings
from cracktrader.engine.market import align
from cracktrader.engine.records import (
    O_BAR,
    O_PRICE,
    O_QTY,
    O_REASON,
    O_STATUS,
    REASON_CANCELED_BY_STRATEGY,
    REASON_INSUFFICIENT_CASH,
    REASON_NO_POSITION,
    REASON_SHORTING_DISABLED,
    STATUS_CANCELED,
    STATUS_FILLED,
    STATUS_OPEN,
    STATUS_REJECTED,
)
from cracktrader.strategies.builtin import SmaCross, SmaCrossEvents
from engine_helpers import market, random_walk, scripted

FLAT = (100.0, 101.0, 99.0, 100.0)
NO_FEES = SimSettings(maker_fee=0.0, taker_fee=0.0)


def _rows(*bars: tuple[float, float, float, float]) -> object:
    return market(("X", list(bars)))


def test_market_buy_fills_at_next_open_all_in() -> None:
    data = _rows(FLAT, (105.0, 106.0, 104.0, 105.0), FLAT)
    res = run_backtest(scripted(b0=lambda c: c.buy()), data, SimSettings(taker_fee=0.001))
    (o,) = res.orders
    assert o[O_BAR] == 1 and o[O_PRICE] == 105.0
    assert o[O_QTY] == pytest.approx(10_000 / (105.0 * 1.001), rel=1e-12)


def test_limit_buy_fills_at_limit_when_low_reaches_it() -> None:
    data = _rows(FLAT, (100.0, 101.0, 98.0, 99.0), FLAT)
    res = run_backtest(scripted(b0=lambda c: c.buy(size=10, limit=98.5)), data, NO_FEES)
    assert res.orders[0][O_PRICE] == 98.5 and res.orders[0][O_BAR] == 1
    assert res.cash[-1] == pytest.approx(10_000 - 985.0)


def test_limit_buy_below_the_range_stays_open() -> None:
    data = _rows(FLAT, FLAT, FLAT)
    res = run_backtest(scripted(b0=lambda c: c.buy(size=1, limit=90.0)), data, NO_FEES)
    assert res.orders[0][O_STATUS] == STATUS_OPEN
    assert res.cash[-1] == 10_000


def test_stop_buy_triggers_at_stop_price_plus_slippage() -> None:
    data = _rows(FLAT, (100.0, 106.0, 99.0, 105.0), FLAT)
    settings = SimSettings(maker_fee=0.0, taker_fee=0.0, slippage=0.001)
    res = run_backtest(scripted(b0=lambda c: c.buy(size=1, stop=103.0)), data, settings)
    assert res.orders[0][O_PRICE] == pytest.approx(103.0 * 1.001)


def test_stop_limit_triggered_beyond_its_limit_waits_for_the_limit() -> None:
    data = _rows(FLAT, (100.0, 110.0, 99.0, 108.0), (108.0, 109.0, 103.5, 104.0))
    res = run_backtest(scripted(b0=lambda c: c.buy(size=1, stop=105.0, limit=104.0)), data, NO_FEES)
    (o,) = res.orders
    assert o[O_STATUS] == STATUS_FILLED and o[O_BAR] == 2 and o[O_PRICE] == 104.0


def test_sell_without_a_position_is_rejected_with_reason() -> None:
    res = run_backtest(scripted(b0=lambda c: c.sell(size=1)), _rows(FLAT, FLAT), NO_FEES)
    assert res.orders[0][O_STATUS] == STATUS_REJECTED
    assert res.orders[0][O_REASON] in (REASON_NO_POSITION, REASON_SHORTING_DISABLED)


def test_buy_costing_more_than_cash_is_rejected() -> None:
    res = run_backtest(scripted(b0=lambda c: c.buy(size=1000)), _rows(FLAT, FLAT), NO_FEES)
    assert res.orders[0][O_STATUS] == STATUS_REJECTED
    assert res.orders[0][O_REASON] == REASON_INSUFFICIENT_CASH
    assert res.cash[-1] == 10_000


def test_canceled_order_never_fills() -> None:
    ids: list[int] = []

    def place(c: BarContext) -> None:
        ids.append(c.buy(size=1, limit=50.0))

    res = run_backtest(scripted(b0=place, b1=lambda c: c.cancel(ids[0])), _rows(FLAT, FLAT, FLAT), NO_FEES)
    assert res.orders[0][O_STATUS] == STATUS_CANCELED
    assert res.orders[0][O_REASON] == REASON_CANCELED_BY_STRATEGY


def test_partial_sell_realises_pnl_on_the_sold_part_only() -> None:
    data = _rows(FLAT, FLAT, (120.0, 121.0, 119.0, 120.0), FLAT)
    res = run_backtest(scripted(b0=lambda c: c.buy(size=10), b1=lambda c: c.sell(size=4)), data, NO_FEES)
    sell = res.orders[1]
    assert sell[O_QTY] == 4 and sell[O_PRICE] == 120.0
    assert res.positions[0].size == pytest.approx(6.0)
    assert res.final_value == pytest.approx(10_000 + 10 * (100.0 - 100.0) + 4 * 20.0)


def test_short_sell_is_rejected_unless_enabled() -> None:
    data = _rows(FLAT, (100.0, 101.0, 99.0, 100.0), (90.0, 91.0, 89.0, 90.0))
    res = run_backtest(
        scripted(b0=lambda c: c.sell(), b1=lambda c: c.close_position()),
        data,
        SimSettings(maker_fee=0.0, taker_fee=0.0, allow_short=True),
    )
    short, _cover = res.orders
    assert short[O_QTY] == pytest.approx(100.0)
    assert res.final_value == pytest.approx(10_000 + 100 * 10.0)


@pytest.mark.parametrize(
    "params",
    [{}, {"stop_loss": 0.01, "take_profit": 0.02}, {"size": 0.5, "stop_loss": 0.005}],
)
def test_event_and_vectorized_sma_cross_give_identical_equity(params: dict[str, float]) -> None:
    data = align({"X": random_walk(5000, seed=7, vol=0.004)}, 8760.0)
    settings = SimSettings(maker_fee=0.0005, taker_fee=0.001, slippage=0.0002)
    vec = run_backtest(SmaCross(params), data, settings)
    evt = run_backtest(SmaCrossEvents(params), data, settings)
    assert vec.metrics["total_trades"] > 50
    np.testing.assert_allclose(evt.equity, vec.equity, rtol=1e-12)
    filled_vec = vec.orders[vec.orders[:, O_STATUS] == STATUS_FILLED]
    filled_evt = evt.orders[evt.orders[:, O_STATUS] == STATUS_FILLED]
    np.testing.assert_allclose(filled_evt[:, O_PRICE], filled_vec[:, O_PRICE], rtol=1e-12)
    assert vec.metrics == evt.metrics


def test_context_history_ends_at_the_current_bar() -> None:
    seen: list[int] = []

    def look(c: BarContext) -> None:
        seen.append(len(c.bars().close))
        assert math.isclose(c.price(), float(c.bars().close[-1]))

    strat = scripted(b0=look, b1=look, b2=look)
    run_backtest(strat, _rows(FLAT, FLAT, FLAT), NO_FEES)
    assert seen == [1, 2, 3]
