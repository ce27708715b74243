"""A paper session over replayed candles gives exactly the backtest's orders, fills, fees and equity."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cracktrader.brokers.paper import PaperSession
from cracktrader.data.feeds.base import ClosedCandle
from cracktrader.data.sources.synthetic import generate
from cracktrader.data.timeframes import parse_timeframe
from cracktrader.engine.backtest import BacktestResult, run_backtest
from cracktrader.engine.broker import SimSettings
from cracktrader.engine.market import MarketData, align
from cracktrader.engine.records import (
    O_BAR,
    O_FEE,
    O_PNL,
    O_PRICE,
    O_QTY,
    O_REASON,
    O_RETURN,
    O_SIDE,
    O_STATUS,
    O_SYMBOL,
    O_TYPE,
    STATUS_FILLED,
)
from cracktrader.engine.rules import amount_to_precision
from cracktrader.engine.strategy import Strategy
from cracktrader.errors import UserInputError
from cracktrader.exchanges.markets import market_rules
from cracktrader.strategies.builtin import BUILTIN_STRATEGIES, BuyAndHold, SmaCross, SmaCrossEvents

NOW = 1_767_225_600_000  # 2026-01-01
SYMBOLS = ("BTC/USDT", "ETH/USDT")
SETTINGS = SimSettings(maker_fee=0.0005, taker_fee=0.001, slippage=0.0002)
FILL_COLUMNS = [O_BAR, O_SYMBOL, O_SIDE, O_TYPE, O_QTY, O_PRICE, O_FEE, O_PNL, O_RETURN, O_REASON]


def _candles(bars: int = 3000, gaps: bool = False) -> dict[str, object]:
    tf = parse_timeframe("1h")
    out = {s: generate(s, tf, NOW - bars * tf.ms, NOW, NOW) for s in SYMBOLS}
    if gaps:  # ETH/USDT misses every 97th candle: it cannot trade there, and its price carries forward
        eth = out["ETH/USDT"]
        keep = np.arange(len(eth.timestamp)) % 97 != 5
        out["ETH/USDT"] = type(eth)(
            *(getattr(eth, k)[keep] for k in ("timestamp", "open", "high", "low", "close", "volume"))
        )
    return out


def _replay(strategy: Strategy, candles: dict[str, object], settings: SimSettings) -> BacktestResult:
    """Feed the candles bar time by bar time to a paper session, as a live feed would."""
    session = PaperSession(strategy, SYMBOLS, settings, parse_timeframe("1h").periods_per_year)
    by_time: dict[int, dict[str, ClosedCandle]] = {}
    for symbol, c in candles.items():
        for k in range(len(c.timestamp)):  # type: ignore[attr-defined]
            by_time.setdefault(int(c.timestamp[k]), {})[symbol] = ClosedCandle(  # type: ignore[attr-defined]
                float(c.open[k]),
                float(c.high[k]),
                float(c.low[k]),
                float(c.close[k]),
                float(c.volume[k]),  # type: ignore[attr-defined]
            )
    for ts in sorted(by_time):
        session.on_bar(ts, by_time[ts])
    return session.result()


def _fills(res: BacktestResult) -> np.ndarray:
    rows = res.orders[res.orders[:, O_STATUS] == STATUS_FILLED][:, FILL_COLUMNS]
    return rows[np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))]


def _backtest(strategy: Strategy, candles: dict[str, object], settings: SimSettings) -> BacktestResult:
    data: MarketData = align(candles, parse_timeframe("1h").periods_per_year)  # type: ignore[arg-type]
    return run_backtest(strategy, data, settings)


def _assert_same(paper: BacktestResult, backtest: BacktestResult) -> None:
    assert len(_fills(backtest)) >= 20
    np.testing.assert_array_equal(_fills(paper), _fills(backtest))
    np.testing.assert_array_equal(paper.equity, backtest.equity)
    np.testing.assert_array_equal(paper.cash, backtest.cash)
    np.testing.assert_array_equal(paper.timestamp, backtest.timestamp)
    assert paper.metrics == backtest.metrics
    assert [(p.symbol, p.size, p.entry_price) for p in paper.positions] == [
        (p.symbol, p.size, p.entry_price) for p in backtest.positions
    ]


@pytest.mark.parametrize("cls", [c for c in BUILTIN_STRATEGIES if c.name != "BuyAndHold"], ids=lambda c: c.name)
def test_paper_over_replayed_candles_equals_the_backtest(cls: type[Strategy]) -> None:
    candles = _candles()
    params = {"size": 0.5} if "size" in cls.Params.model_fields else {}
    _assert_same(_replay(cls(params), candles, SETTINGS), _backtest(cls(params), candles, SETTINGS))


@pytest.mark.parametrize("strategy", [SmaCrossEvents(size=0.5), BuyAndHold()], ids=lambda s: s.name)
def test_event_strategy_orders_are_identical_row_for_row(strategy: Strategy) -> None:
    candles = _candles()
    paper = _replay(strategy, candles, SETTINGS)
    backtest = _backtest(type(strategy)(strategy.params.model_dump()), candles, SETTINGS)
    np.testing.assert_array_equal(paper.orders, backtest.orders)
    np.testing.assert_array_equal(paper.equity, backtest.equity)
    assert paper.metrics == backtest.metrics


@pytest.mark.parametrize("params", [{"stop_loss": 0.01, "take_profit": 0.02, "size": 0.5}, {"stop_loss": 0.005}])
def test_brackets_and_missing_candles_fill_as_in_the_backtest(params: dict[str, float]) -> None:
    candles = _candles(gaps=True)
    for cls in (SmaCross, SmaCrossEvents):
        _assert_same(_replay(cls(params), candles, SETTINGS), _backtest(cls(params), candles, SETTINGS))


def test_a_bar_out_of_order_or_of_an_unknown_symbol_is_refused() -> None:
    session = PaperSession(SmaCross(), SYMBOLS, SETTINGS, 8760.0)
    candle = ClosedCandle(1.0, 1.0, 1.0, 1.0, 1.0)
    session.on_bar(3_600_000, {"BTC/USDT": candle})
    with pytest.raises(UserInputError, match="is not after the last bar"):
        session.on_bar(3_600_000, {"BTC/USDT": candle})
    with pytest.raises(UserInputError, match=r"does not trade: \['DOGE/USDT'\]"):
        session.on_bar(7_200_000, {"DOGE/USDT": candle})


# Exchange rules on both sides: the synthetic markets' fees, precision and minimums, and funds held by open orders.
RULED = dataclasses.replace(SETTINGS, rules=market_rules("synthetic", SYMBOLS))


@pytest.mark.parametrize("cls", [c for c in BUILTIN_STRATEGIES if c.name != "BuyAndHold"], ids=lambda c: c.name)
def test_with_exchange_rules_paper_over_replayed_candles_equals_the_backtest_with_them(cls: type[Strategy]) -> None:
    candles = _candles()
    params = {"size": 0.5} if "size" in cls.Params.model_fields else {}
    paper, backtest = _replay(cls(params), candles, RULED), _backtest(cls(params), candles, RULED)
    _assert_same(paper, backtest)
    np.testing.assert_array_equal(paper.orders, backtest.orders)  # both on the event simulator: row for row
    # The rules did apply: every filled amount is on its market's step, and the result differs from rules off.
    filled = backtest.orders[backtest.orders[:, O_STATUS] == STATUS_FILLED]
    assert RULED.rules is not None
    assert all(amount_to_precision(RULED.rules[int(r[O_SYMBOL])], r[O_QTY]) == r[O_QTY] for r in filled)
    assert backtest.equity[-1] != _backtest(cls(params), candles, SETTINGS).equity[-1]


@pytest.mark.parametrize("strategy", [SmaCrossEvents(size=0.5), BuyAndHold()], ids=lambda s: s.name)
def test_with_exchange_rules_event_strategy_orders_are_identical_row_for_row(strategy: Strategy) -> None:
    candles = _candles()
    paper = _replay(strategy, candles, RULED)
    backtest = _backtest(type(strategy)(strategy.params.model_dump()), candles, RULED)
    np.testing.assert_array_equal(paper.orders, backtest.orders)
    np.testing.assert_array_equal(paper.equity, backtest.equity)
    np.testing.assert_array_equal(paper.cash, backtest.cash)
    assert paper.metrics == backtest.metrics


def test_with_exchange_rules_brackets_and_missing_candles_fill_as_in_the_backtest() -> None:
    candles = _candles(gaps=True)
    for cls in (SmaCross, SmaCrossEvents):
        params = {"stop_loss": 0.01, "take_profit": 0.02, "size": 0.5}
        paper, backtest = _replay(cls(params), candles, RULED), _backtest(cls(params), candles, RULED)
        _assert_same(paper, backtest)
        np.testing.assert_array_equal(paper.orders, backtest.orders)
