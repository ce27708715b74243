"""Properties of both simulators: no look-ahead, and cash plus positions conserved apart from fees."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cracktrader.engine.backtest import run_backtest
from cracktrader.engine.broker import SimSettings
from cracktrader.engine.market import align
from cracktrader.engine.records import (
    O_CREATED,
    O_FEE,
    O_PRICE,
    O_QTY,
    O_SIDE,
    O_STATUS,
    O_SYMBOL,
    STATUS_FILLED,
)
from cracktrader.engine.strategy import Signals, Strategy
from cracktrader.strategies.builtin import (
    BollingerReversion,
    DonchianBreakout,
    EmaCross,
    MacdTrend,
    RsiMeanReversion,
    SmaCross,
    SmaCrossEvents,
    TestStrategy,
)
from engine_helpers import Ohlcv, random_walk, with_signals

STRATEGIES: list[Strategy] = [
    SmaCross(),
    EmaCross(),
    RsiMeanReversion(),
    BollingerReversion(),
    MacdTrend(),
    DonchianBreakout(),
    TestStrategy(),
    TestStrategy(period=10, slow=30),
    SmaCrossEvents(),
    SmaCross(stop_loss=0.01, take_profit=0.02),
]


def _perturb_after(c: Ohlcv, t: int, seed: int) -> Ohlcv:
    """A copy whose bars after t are replaced by a different random walk."""
    other = random_walk(len(c.close), seed=seed, vol=0.03)
    out = Ohlcv(*(np.array(getattr(c, k), copy=True) for k in ("timestamp", "open", "high", "low", "close", "volume")))
    scale = c.close[t] / other.open[t + 1]
    for k in ("open", "high", "low", "close"):
        getattr(out, k)[t + 1 :] = getattr(other, k)[t + 1 :] * scale
    return out


def _decisions_through(res: object, t: int) -> np.ndarray:
    rows = res.orders  # type: ignore[attr-defined]
    return rows[rows[:, O_CREATED] <= t][:, [O_CREATED, O_SYMBOL, O_SIDE]]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: f"{s.name}{dict(s.params)}")
@pytest.mark.parametrize("t", [300, 1200, 2500])
def test_changing_bars_after_t_cannot_change_decisions_made_through_t(strategy: Strategy, t: int) -> None:
    base = random_walk(3000, seed=11, vol=0.01)
    settings_ = SimSettings(taker_fee=0.001, maker_fee=0.0005)
    original = run_backtest(strategy, align({"X": base}, 8760.0), settings_)
    changed = run_backtest(strategy, align({"X": _perturb_after(base, t, seed=99)}, 8760.0), settings_)
    assert len(_decisions_through(original, t)) > 0
    np.testing.assert_array_equal(_decisions_through(original, t), _decisions_through(changed, t))
    # Equity through bar t is a function of bars 0..t only.
    np.testing.assert_array_equal(original.equity[: t + 1], changed.equity[: t + 1])


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    fee=st.floats(0.0, 0.01),
    slippage=st.floats(0.0, 0.005),
    stop_loss=st.one_of(st.none(), st.floats(0.005, 0.2)),
    take_profit=st.one_of(st.none(), st.floats(0.005, 0.5)),
    size=st.floats(0.05, 1.0),
    allow_short=st.booleans(),
)
def test_cash_plus_positions_is_conserved_apart_from_fees(
    seed: int,
    fee: float,
    slippage: float,
    stop_loss: float | None,
    take_profit: float | None,
    size: float,
    allow_short: bool,
) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    markets = {s: random_walk(n, seed=seed + k, vol=0.02) for k, s in enumerate(("A", "B"))}
    plan = {
        s: Signals(
            entries=rng.random(n) < 0.08,
            exits=rng.random(n) < 0.08,
            short_entries=rng.random(n) < 0.05,
            short_exits=rng.random(n) < 0.05,
            stop_loss=stop_loss,
            take_profit=take_profit,
            size=size,
        )
        for s in markets
    }
    data = align(markets, 8760.0)
    res = run_backtest(
        with_signals(**plan),
        data,
        SimSettings(maker_fee=fee / 2, taker_fee=fee, slippage=slippage, allow_short=allow_short),
    )
    fills = res.orders[res.orders[:, O_STATUS] == STATUS_FILLED]
    signed_qty = fills[:, O_SIDE] * fills[:, O_QTY]
    cash = 10_000.0 - np.sum(signed_qty * fills[:, O_PRICE]) - np.sum(fills[:, O_FEE])
    holdings = [np.sum(signed_qty[fills[:, O_SYMBOL] == j]) for j in range(2)]
    marked = sum(h * data.close[-1, j] for j, h in enumerate(holdings))
    assert res.final_value == pytest.approx(cash + marked, rel=1e-9, abs=1e-6)
    assert res.metrics["fees_paid"] == pytest.approx(float(np.sum(fills[:, O_FEE])), rel=1e-9, abs=1e-9)
    if not allow_short:
        assert res.cash.min() >= 0.0
        assert min(holdings) >= -1e-9
