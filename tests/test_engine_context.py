"""Strategies see a `Context`: every symbol trades, symbols are named, and orders report back."""

from __future__ import annotations

import numpy as np
import pytest

from cracktrader.engine.backtest import run_backtest
from cracktrader.engine.broker import SimSettings
from cracktrader.engine.context import Context, Fill, OrderUpdate
from cracktrader.engine.market import Bars, align
from cracktrader.engine.records import O_STATUS, O_SYMBOL, STATUS_FILLED
from cracktrader.engine.strategy import Strategy
from cracktrader.errors import UserInputError
from cracktrader.strategies.builtin import BUILTIN_STRATEGIES
from engine_helpers import random_walk, scripted

SYMBOLS = ("BTC/USDT", "ETH/USDT", "NEAR/USDT")


def _three_symbols(n: int = 6000) -> object:
    return align({s: random_walk(n, seed=20 + k, vol=0.01) for k, s in enumerate(SYMBOLS)}, 8760.0)


@pytest.mark.parametrize("cls", BUILTIN_STRATEGIES, ids=lambda c: c.name)
def test_every_builtin_fills_orders_on_each_of_three_symbols(cls: type[Strategy]) -> None:
    # Half of the cash per entry, so one symbol's position never blocks the others.
    params = {"size": 0.5} if "size" in cls.Params.model_fields else {}
    res = run_backtest(cls(params), _three_symbols(), SimSettings())  # type: ignore[arg-type]
    filled = res.orders[res.orders[:, O_STATUS] == STATUS_FILLED]
    per_symbol = np.bincount(filled[:, O_SYMBOL].astype(int), minlength=3)
    assert all(per_symbol > 0), dict(zip(SYMBOLS, per_symbol.tolist(), strict=True))


def test_buy_and_hold_puts_equal_parts_in_every_symbol() -> None:
    res = run_backtest(BUILTIN_STRATEGIES[7](), _three_symbols(50), SimSettings(taker_fee=0.0))  # type: ignore[arg-type]
    assert [p.symbol for p in res.positions] == list(SYMBOLS)
    costs = [p.size * p.entry_price for p in res.positions]
    np.testing.assert_allclose(costs, [10_000 / 3] * 3, rtol=1e-12)


def test_an_unnamed_symbol_with_several_symbols_is_refused_with_the_fix() -> None:
    strat = scripted(b0=lambda c: c.buy())
    with pytest.raises(UserInputError, match=r"trades 3 symbols .* name the symbol"):
        run_backtest(strat, _three_symbols(10), SimSettings())  # type: ignore[arg-type]


def test_an_unknown_symbol_is_refused_with_the_symbols_traded() -> None:
    strat = scripted(b0=lambda c: c.position("DOGE/USDT"))
    with pytest.raises(UserInputError, match=r"Unknown symbol 'DOGE/USDT'; this run trades \['BTC/USDT'"):
        run_backtest(strat, _three_symbols(10), SimSettings())  # type: ignore[arg-type]


def test_overriding_init_data_is_refused_at_class_definition_with_the_replacement() -> None:
    with pytest.raises(TypeError, match=r"init\(data\) is no longer supported: return the arrays .*indicators"):

        class Old(Strategy):
            def init(self, data: object) -> None:
                pass


class Journal(Strategy):
    """Buys with a limit that never fills, cancels it, buys at market, then sells more than it holds."""

    events: list[Fill | OrderUpdate]

    def on_bar(self, ctx: Context) -> None:
        n = len(ctx.bars())
        if n == 1:
            self.events = []
            self.limit_id = ctx.buy(size=1.0, limit=1.0)
        elif n == 2:
            ctx.cancel(self.limit_id)
            ctx.buy(size=2.0)
        elif n == 4:
            ctx.sell(size=5.0)

    def on_fill(self, ctx: Context, fill: Fill) -> None:
        self.events.append(fill)

    def on_order(self, ctx: Context, update: OrderUpdate) -> None:
        assert update.timestamp <= ctx.timestamp  # delivered before the next on_bar
        self.events.append(update)


def test_on_order_and_on_fill_report_accepted_filled_cancelled_and_rejected_with_reasons() -> None:
    data = align({"X": random_walk(8, seed=3)}, 8760.0)
    strat = Journal()
    run_backtest(strat, data, SimSettings())
    states = [(type(e).__name__, getattr(e, "status", None), e.reason, e.order_id) for e in strat.events]
    assert states == [
        ("OrderUpdate", "accepted", "signal", 1),
        ("OrderUpdate", "cancelled", "canceled by strategy", 1),
        ("OrderUpdate", "accepted", "signal", 2),
        ("Fill", None, "signal", 2),
        ("OrderUpdate", "filled", "signal", 2),
        ("OrderUpdate", "accepted", "signal", 3),
        ("OrderUpdate", "rejected", "sell size exceeds position", 3),
    ]
    fill = strat.events[3]
    assert isinstance(fill, Fill)
    assert (fill.symbol, fill.side, fill.size) == ("X", "buy", 2.0)
    assert fill.price == pytest.approx(float(data.open[2, 0]))


class TwoSymbolIndicators(Strategy):
    """Reads a per-symbol indicator and the one of the bar before."""

    seen: list[tuple[str, float, float]]

    def indicators(self, bars: Bars) -> dict[str, np.ndarray]:
        return {"close": np.asarray(bars.close)}

    def on_bar(self, ctx: Context) -> None:
        if not hasattr(self, "seen"):
            self.seen = []
        for s in ctx.symbols:
            self.seen.append((s, ctx.indicator("close", s), ctx.indicator("close", s, ago=1)))


def test_indicators_are_per_symbol_and_nan_before_the_history_starts() -> None:
    data = align({"A": random_walk(3, seed=1), "B": random_walk(3, seed=2)}, 8760.0)
    strat = TwoSymbolIndicators()
    run_backtest(strat, data, SimSettings())
    assert strat.seen[0][:2] == ("A", data.close[0, 0])
    assert np.isnan(strat.seen[0][2])
    assert strat.seen[3] == ("B", data.close[1, 1], data.close[0, 1])


def test_an_indicator_of_the_wrong_length_is_refused_naming_it() -> None:
    class Short(Strategy):
        def indicators(self, bars: Bars) -> dict[str, np.ndarray]:
            return {"fast": np.asarray(bars.close[1:])}

        def on_bar(self, ctx: Context) -> None:
            pass

    with pytest.raises(UserInputError, match=r"indicators\(\)\['fast'\] has shape \(9,\); expected one value per bar"):
        run_backtest(Short(), align({"X": random_walk(10)}, 8760.0), SimSettings())
