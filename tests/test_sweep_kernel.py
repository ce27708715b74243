"""The fused crossover kernel of sweeps gives the generic simulator's order rows and stats, bit for bit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cracktrader.engine.backtest import run_backtest
from cracktrader.engine.broker import SimSettings
from cracktrader.engine.indicators import crossed_above, crossed_below, sma
from cracktrader.engine.market import MarketData
from cracktrader.engine.metrics import METRIC_KEYS
from cracktrader.engine.records import N_COLS
from cracktrader.engine.strategy import Strategy
from cracktrader.strategies import builtin
from cracktrader.sweeps import kernel as k
from cracktrader.sweeps.grid import Combination
from cracktrader.sweeps.plans import SignalPlan, SweepInputs, make_plan


def _market(seed: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.concatenate([[close[0]], close[:-1]]) * (1.0 + rng.normal(0.0, 0.001, n))
    tradable = rng.random(n) > 0.05  # gaps: decisions and fills wait for a tradable bar
    return {
        "open": open_[:, None].copy(),
        "high": (np.maximum(open_, close) * 1.001)[:, None].copy(),
        "low": (np.minimum(open_, close) * 0.999)[:, None].copy(),
        "close": close[:, None].copy(),
        "tradable": tradable[:, None].copy(),
        "ts": np.arange(n, dtype=np.float64) * 60_000.0,
    }


def _generic(mk: dict[str, np.ndarray], a: np.ndarray, b: np.ndarray, **kw: float) -> tuple[np.ndarray, np.ndarray]:
    """The stats and order rows of the backtest's own simulator and metric kernels on the same signals."""
    n = a.shape[0]
    entries = crossed_above(a, b)[:, None]
    exits = crossed_below(a, b)[:, None]
    no = np.zeros((1, 1), dtype=np.bool_)
    stats = np.empty(k.N_STATS)
    orders, n_orders = k.run_signals(
        mk["open"],
        mk["high"],
        mk["low"],
        mk["close"],
        mk["tradable"],
        entries,
        exits,
        no,
        no,
        np.full((1, 1), np.nan),
        np.full((1, 1), np.nan),
        np.full((1, 1), kw["size"]),
        kw["fee"],
        kw["fee"],
        kw["slippage"],
        int(kw["latency"]),
        False,
        kw["cash"],
        entries[:, 0] | exits[:, 0],
        mk["ts"],
        -60_000.0,
        np.empty(n),
        np.empty(n),
        np.zeros(n, dtype=np.bool_),
        np.empty((16, N_COLS)),
        0,
        stats,
    )
    return stats, orders[:n_orders]


@pytest.mark.parametrize("seed", range(6))
def test_fused_cross_kernel_equals_the_generic_simulator_bit_for_bit(seed: int) -> None:
    n = 5_000
    mk = _market(seed, n)
    rng = np.random.default_rng(100 + seed)
    for _ in range(4):
        fast, slow = sorted(int(w) for w in rng.choice(np.arange(2, 60), 2, replace=False))
        kw = {
            "size": float(rng.choice([1.0, 0.5])),
            "fee": float(rng.choice([0.0, 0.001])),
            "slippage": float(rng.choice([0.0, 0.0003])),
            "latency": float(rng.choice([0, 1, 3])),
            "cash": float(rng.choice([1_000.0, 2_500.5])),
        }
        a, b = sma(mk["close"][:, 0].copy(), fast), sma(mk["close"][:, 0].copy(), slow)
        want_stats, want_orders = _generic(mk, a, b, **kw)
        stats = np.empty(k.N_STATS)
        # A tiny buffer: the kernel must grow it (and the segments) mid-run without changing anything.
        orders, _, n_orders = k.run_cross(
            a,
            b,
            mk["open"],
            mk["close"],
            mk["tradable"],
            kw["size"],
            kw["fee"],
            kw["slippage"],
            int(kw["latency"]),
            kw["cash"],
            mk["ts"],
            -60_000.0,
            np.empty((4, N_COLS)),
            0,
            np.empty((4, k.N_SEG)),
            stats,
        )
        assert len(want_orders) > 10
        np.testing.assert_array_equal(orders[:n_orders], want_orders)
        # Bit for bit, NaN included: compare the float64 bytes.
        assert stats.tobytes() == want_stats.tobytes(), (fast, slow, kw)


def _loop(s: float, x: float, count: int) -> float:
    for _ in range(count):
        s += x
    return s


def test_add_repeated_rounds_like_a_loop_of_additions() -> None:
    rng = np.random.default_rng(7)
    cases = [(0.0, 1e-8, 5_000), (1.0, 2.0**-53, 100), (1.0, 3 * 2.0**-54, 1_000), (0.5, 0.0, 50)]
    cases += [(1e-310, 1e-312, 400), (1.0, 2.0**-52 * 1.5, 3_000), (2.0**52 - 10, 1.0, 40), (3.0, 5e-17, 2_000)]
    for _ in range(300):
        s = float(rng.choice([0.0, rng.random() * 10.0 ** rng.integers(-30, 5)]))
        x = float(rng.random() * 10.0 ** rng.integers(-40, 1))
        if rng.random() < 0.2:
            # x exactly halfway between two multiples of s's ulp: ties round to even, alternately.
            x = (int(rng.integers(0, 5)) + 0.5) * np.spacing(max(s, 1e-300))
        cases.append((s, x, int(rng.integers(0, 20_000))))
    for s, x, count in cases:
        assert k.add_repeated(s, x, count) == _loop(s, x, count), (s, x, count)


@pytest.mark.parametrize("seed", range(4))
def test_fused_flags_kernel_equals_the_generic_simulator_bit_for_bit(seed: int) -> None:
    n = 4_000
    mk = _market(seed, n)
    rng = np.random.default_rng(200 + seed)
    # Random signal arrays, with both flags on some bars and an entry on the very first bar.
    entries = (rng.random(n) < 0.03)[:, None].copy()
    exits = (rng.random(n) < 0.03)[:, None].copy()
    entries[0, 0] = True
    entries[::97, 0] = exits[::97, 0] = True
    kw = {"size": 0.7, "fee": 0.001, "slippage": 0.0002, "latency": 2.0, "cash": 1_000.0}
    no = np.zeros((1, 1), dtype=np.bool_)
    want = np.empty(k.N_STATS)
    want_orders, want_n = k.run_signals(
        mk["open"],
        mk["high"],
        mk["low"],
        mk["close"],
        mk["tradable"],
        entries,
        exits,
        no,
        no,
        np.full((1, 1), np.nan),
        np.full((1, 1), np.nan),
        np.full((1, 1), kw["size"]),
        kw["fee"],
        kw["fee"],
        kw["slippage"],
        2,
        False,
        kw["cash"],
        entries[:, 0] | exits[:, 0],
        mk["ts"],
        -60_000.0,
        np.empty(n),
        np.empty(n),
        np.zeros(n, dtype=np.bool_),
        np.empty((16, N_COLS)),
        0,
        want,
    )
    stats = np.empty(k.N_STATS)
    orders, _, n_orders = k.run_flags(
        entries,
        exits,
        mk["open"],
        mk["close"],
        mk["tradable"],
        kw["size"],
        kw["fee"],
        kw["slippage"],
        2,
        kw["cash"],
        mk["ts"],
        -60_000.0,
        np.empty((4, N_COLS)),
        0,
        np.empty((4, k.N_SEG)),
        stats,
    )
    assert want_n > 10
    np.testing.assert_array_equal(orders[:n_orders], want_orders[:want_n])
    assert stats.tobytes() == want.tobytes()


# Each built-in whose signals the fused kernel derives by a rule, with params that trade often on `_market`.
RULE_GRIDS: list[tuple[type[Strategy], list[dict[str, Any]]]] = [
    (
        builtin.RsiMeanReversion,
        [{"period": 5, "oversold": 40.0, "overbought": 60.0}, {"period": 14, "oversold": 48.0, "overbought": 52.0}],
    ),
    (builtin.BollingerReversion, [{"period": 5, "stdev": 0.5}, {"period": 20, "stdev": 1.5, "size": 0.5}]),
    (builtin.MacdTrend, [{"fast": 3, "slow": 10, "signal": 4}, {"fast": 12, "slow": 26, "signal": 9}]),
    (builtin.DonchianBreakout, [{"entry_period": 5, "exit_period": 3}, {"entry_period": 20, "exit_period": 10}]),
]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("cls", "grid"), RULE_GRIDS, ids=[c.__name__ for c, _ in RULE_GRIDS])
def test_rule_kernels_equal_the_strategy_s_own_backtest_bit_for_bit(
    cls: type[Strategy], grid: list[dict[str, Any]], seed: int
) -> None:
    mk = _market(seed, 3_000)
    data = MarketData(
        ("X/USDT",),
        mk["ts"].astype(np.int64),
        mk["open"],
        mk["high"],
        mk["low"],
        mk["close"],
        np.ones_like(mk["close"]),
        mk["tradable"],
        525_600.0,
    )
    sim = SimSettings(initial_cash=1_000.0, maker_fee=0.001, taker_fee=0.001, slippage=0.0002, latency=1 + seed)
    inputs = SweepInputs(cls, data, sim, METRIC_KEYS)
    plan = make_plan(inputs, [])
    assert isinstance(plan, SignalPlan)
    combos = [(Combination(i, p), cls.validate_params(p)) for i, p in enumerate(grid)]
    rows = plan.evaluate(combos)
    for row, (_, params) in zip(rows, combos, strict=True):
        assert plan._rule_inputs(params) is not None  # the rule's kernel, not the strategy's signals
        want = run_backtest(cls(params.model_dump()), data, sim).metrics
        assert want["total_trades"] > 5, row.params
        assert repr(row.metrics) == repr(want), row.params
