"""Exchange rules in the simulator: fees per market, ccxt precision, minimum amount and notional, locked funds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cracktrader.data.sources.synthetic import generate
from cracktrader.data.timeframes import parse_timeframe
from cracktrader.engine.backtest import BacktestResult, run_backtest
from cracktrader.engine.broker import BarContext, SimSettings
from cracktrader.engine.market import align
from cracktrader.engine.records import (
    O_FEE,
    O_PRICE,
    O_QTY,
    O_REASON,
    O_STATUS,
    O_TRIGGER,
    REASON_BELOW_MIN_AMOUNT,
    REASON_BELOW_MIN_NOTIONAL,
    REASON_FUNDS_LOCKED,
    REASON_NAMES,
    STATUS_FILLED,
    STATUS_OPEN,
    STATUS_REJECTED,
)
from cracktrader.engine.rules import DECIMAL_PLACES, MarketRules, amount_to_precision, price_to_precision
from cracktrader.exchanges.markets import market_rules, rules_from_market
from cracktrader.runs.backtest import document_config, prepare_backtest, run_prepared
from cracktrader.runs.config import BacktestConfig
from cracktrader.settings import Settings
from cracktrader.strategies.builtin import SmaCross, SmaCrossEvents
from engine_helpers import market, scripted
from fakes.binance import FakeBinance

RULES = MarketRules(0.0005, 0.001, amount_precision=0.001, price_precision=0.01, min_amount=0.01, min_notional=5.0)
FLAT = [(100.0, 101.0, 99.0, 100.0)] * 6


def _fills(res: BacktestResult) -> np.ndarray:
    """Filled rows without the order id, in time order (the kernel and the event simulator number orders apart)."""
    rows = res.orders[res.orders[:, O_STATUS] == STATUS_FILLED][:, 2:]
    return rows[np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))]


def _run(strategy: object, rules: MarketRules = RULES, cash: float = 1_000.0) -> BacktestResult:
    data = market(("BTC/USDT", FLAT))
    return run_backtest(strategy, data, SimSettings(initial_cash=cash, rules=(rules,)))  # type: ignore[arg-type]


def test_amounts_truncate_and_prices_round_to_the_markets_grid() -> None:
    assert amount_to_precision(RULES, 0.123999) == 0.123
    assert price_to_precision(RULES, 100.126) == 100.13
    digits = MarketRules(0.0, 0.0, amount_precision=2, price_precision=1, precision_mode=DECIMAL_PLACES)
    assert (amount_to_precision(digits, 1.239), price_to_precision(digits, 99.96)) == (1.23, 100.0)

    def place(ctx: BarContext) -> None:
        ctx.buy(size=0.123999)
        ctx.buy(size=0.0609, limit=98.126)

    res = _run(scripted(b0=place))
    market_row, limit_row = res.orders
    assert (market_row[O_STATUS], market_row[O_QTY], market_row[O_PRICE]) == (STATUS_FILLED, 0.123, 100.0)
    assert market_row[O_FEE] == pytest.approx(0.123 * 100.0 * 0.001)  # the market's taker rate
    assert (limit_row[O_STATUS], limit_row[O_QTY], limit_row[O_TRIGGER]) == (STATUS_OPEN, 0.060, 98.13)


def test_an_order_below_the_minimum_amount_or_notional_is_rejected_locally_with_its_reason() -> None:
    def place(ctx: BarContext) -> None:
        ctx.buy(size=0.0099)  # under min_amount 0.01
        ctx.buy(size=0.04)  # 0.04 x 100 = 4 < min_notional 5
        ctx.buy(size=0.02, limit=300.0)  # 6 at its limit: enough

    res = _run(scripted(b0=place))
    assert [(r[O_STATUS], r[O_REASON]) for r in res.orders[:2]] == [
        (STATUS_REJECTED, REASON_BELOW_MIN_AMOUNT),
        (STATUS_REJECTED, REASON_BELOW_MIN_NOTIONAL),
    ]
    assert REASON_NAMES[REASON_BELOW_MIN_NOTIONAL] == "notional below the market's minimum"
    assert res.orders[2][O_STATUS] == STATUS_FILLED and res.orders[2][O_QTY] == 0.02


def test_open_buy_orders_hold_cash_that_other_orders_cannot_spend() -> None:
    def place(ctx: BarContext) -> None:
        ctx.buy(size=6.0, limit=90.0)  # rests below the market and holds 6 x 90 x 1.001 = 540.54
        ctx.buy(size=5.0, limit=95.0)  # 475.48 more: only 459.46 is free
        ctx.buy()  # all in: what the resting order leaves free

    res = _run(scripted(b0=place))
    resting, locked_out, all_in = res.orders
    assert resting[O_STATUS] == STATUS_OPEN
    assert (locked_out[O_STATUS], locked_out[O_REASON]) == (STATUS_REJECTED, REASON_FUNDS_LOCKED)
    assert all_in[O_STATUS] == STATUS_FILLED
    assert all_in[O_QTY] == amount_to_precision(RULES, (1_000.0 - 6 * 90.0 * 1.001) / (100.0 * 1.001))
    assert res.cash[-1] >= 6 * 90.0 * 1.001  # the held cash is still there


def test_open_sell_orders_hold_the_units_they_sell() -> None:
    def buy(ctx: BarContext) -> None:
        ctx.buy(size=1.0)

    def sell(ctx: BarContext) -> None:
        ctx.sell(size=0.6, limit=150.0)  # rests above the market
        ctx.sell(size=0.5, limit=160.0)  # only 0.4 is free
        ctx.sell(size=0.4, limit=170.0)

    res = _run(scripted(b0=buy, b1=sell))
    assert [(r[O_STATUS], r[O_REASON] if r[O_STATUS] == STATUS_REJECTED else None) for r in res.orders[1:]] == [
        (STATUS_OPEN, None),
        (STATUS_REJECTED, REASON_FUNDS_LOCKED),
        (STATUS_OPEN, None),
    ]


def test_each_market_pays_its_own_fees() -> None:
    data = market(("BTC/USDT", FLAT), ("ETH/USDT", FLAT))
    cheap, dear = MarketRules(0.0, 0.0002), MarketRules(0.0, 0.003)

    def place(ctx: BarContext) -> None:
        ctx.buy("BTC/USDT", size=1.0)
        ctx.buy("ETH/USDT", size=1.0)

    res = run_backtest(scripted(b0=place), data, SimSettings(rules=(cheap, dear)))
    assert [r[O_FEE] for r in res.orders] == [pytest.approx(100.0 * 0.0002), pytest.approx(100.0 * 0.003)]


@pytest.mark.parametrize("cls", [SmaCross, SmaCrossEvents], ids=lambda c: c.name)
def test_rules_that_constrain_nothing_give_the_plain_backtest_bit_for_bit(cls: type) -> None:
    tf = parse_timeframe("1h")
    now = 1_767_225_600_000
    data = align({s: generate(s, tf, now - 3000 * tf.ms, now, now) for s in ("BTC/USDT", "ETH/USDT")}, 8760.0)
    plain = SimSettings(maker_fee=0.0005, taker_fee=0.001, slippage=0.0002)
    free = SimSettings(maker_fee=0.0005, taker_fee=0.001, slippage=0.0002, rules=(MarketRules(0.0005, 0.001),) * 2)
    a, b = run_backtest(cls({"size": 0.5}), data, plain), run_backtest(cls({"size": 0.5}), data, free)
    assert len(a.orders) >= 20
    np.testing.assert_array_equal(_fills(a), _fills(b))
    np.testing.assert_array_equal(a.equity, b.equity)
    assert a.metrics == b.metrics


def test_vectorized_backtests_keep_the_compiled_kernel_without_rules() -> None:
    tf = parse_timeframe("1h")
    now = 1_767_225_600_000
    data = align({"BTC/USDT": generate("BTC/USDT", tf, now - 500 * tf.ms, now, now)}, 8760.0)
    assert run_backtest(SmaCross(), data, SimSettings()).style == "vectorized"
    assert run_backtest(SmaCross(), data, SimSettings(rules=(RULES,))).style == "event"


def test_synthetic_markets_have_realistic_specs() -> None:
    btc, doge = market_rules("synthetic", ["BTC/USDT", "DOGE/USDT"])
    assert (btc.amount_precision, btc.price_precision, btc.min_amount, btc.min_notional) == (1e-5, 0.01, 1e-5, 5.0)
    assert (doge.amount_precision, doge.min_notional) == (1.0, 5.0)
    assert (btc.maker_fee, btc.taker_fee) == (0.001, 0.001)


def test_a_ccxt_exchanges_rules_come_from_its_markets(tmp_path: Path) -> None:
    with FakeBinance() as fake:
        settings = Settings(data_dir=tmp_path, exchange_options=fake.exchange_options())
        btc, eth = market_rules("binance", ["BTC/USDT", "ETH/USDT"], settings=settings)
        overridden = market_rules("binance", ["BTC/USDT"], settings=settings, fees=(0.002, 0.002))[0]
    # The fake's exchangeInfo filters: tick 0.01, steps 0.00001 and 0.0001, minNotional 5; binance's 0.1% fees.
    assert (btc.price_precision, btc.amount_precision, btc.min_amount, btc.min_notional) == (0.01, 1e-5, 1e-5, 5.0)
    assert (eth.amount_precision, eth.min_amount) == (1e-4, 1e-4)
    assert (btc.maker_fee, btc.taker_fee) == (0.001, 0.001)
    assert (overridden.maker_fee, overridden.taker_fee) == (0.002, 0.002)


def test_a_market_without_fees_or_limits_gets_the_default_fee_and_no_limits() -> None:
    rules = rules_from_market({"symbol": "X/Y", "precision": {}, "limits": {}}, 4, default_fee=0.0015)
    assert rules == MarketRules(0.0015, 0.0015)


def test_a_backtest_with_exchange_rules_records_the_rules_it_used() -> None:
    config = BacktestConfig(
        strategy_name="SmaCross",
        symbols=["BTC/USDT"],
        exchange="synthetic",
        start_date="2024-01-01",
        end_date="2024-02-01",
        exchange_rules=True,
    )
    prepared = prepare_backtest(config)
    result = run_prepared(prepared)
    filled = result.orders[result.orders[:, O_STATUS] == STATUS_FILLED]
    assert len(filled) > 0 and all(amount_to_precision(prepared.sim.rules[0], q) == q for q in filled[:, O_QTY])  # type: ignore[index]
    cfg = document_config(prepared)
    assert cfg["exchange_rules"] is True and cfg["market_rules"]["BTC/USDT"]["min_notional"] == 5.0
    plain = prepare_backtest(config.model_copy(update={"exchange_rules": False}))
    assert plain.sim.rules is None and "market_rules" not in document_config(plain)
