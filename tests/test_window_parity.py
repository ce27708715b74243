"""Every built-in decides on its live window exactly what it decides on the full history, and reads no future."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cracktrader.data.sources.synthetic import generate
from cracktrader.data.timeframes import parse_timeframe
from cracktrader.engine import indicators as ta
from cracktrader.engine.broker import SimSettings
from cracktrader.engine.check import CheckReport, check_strategy
from cracktrader.engine.market import Bars, MarketData, align
from cracktrader.engine.strategy import Signals, Strategy
from cracktrader.strategies.builtin import BUILTIN_STRATEGIES, EmaCross, SmaCross

NOW = 1_767_225_600_000  # 2026-01-01: synthetic candles are a pure function of it
BARS = 12_000


def _market(timeframe: str, symbols: tuple[str, ...] = ("BTC/USDT", "ETH/USDT")) -> MarketData:
    tf = parse_timeframe(timeframe)
    end = NOW
    start = end - BARS * tf.ms
    return align({s: generate(s, tf, start, end, NOW) for s in symbols}, tf.periods_per_year)


def _check(cls: type[Strategy], data: MarketData) -> CheckReport:
    return check_strategy(lambda: cls(), data, SimSettings(), max_window_probes=BARS)


@pytest.fixture(scope="module", params=["1h", "4h"])
def market(request: pytest.FixtureRequest) -> MarketData:
    return _market(request.param)


@pytest.mark.parametrize("cls", BUILTIN_STRATEGIES, ids=lambda c: c.name)
def test_builtin_decides_identically_on_its_window_and_reads_no_future(cls: type[Strategy], market: MarketData) -> None:
    report = _check(cls, market)
    window = next(c for c in report.checks if c.name == "window")
    look_ahead = next(c for c in report.checks if c.name == "look_ahead")
    assert window.differing == 0, window.first_difference
    assert window.compared == BARS * 2  # every bar of both symbols
    assert look_ahead.differing == 0, look_ahead.first_difference
    if cls.name != "BuyAndHold":  # it trades once by design
        assert report.entries >= 50 and report.exits >= 50, (report.entries, report.exits)


class TooShortSma(SmaCross):
    def warmup(self) -> int:
        return int(self.params.slow)  # type: ignore[attr-defined]  # the cross needs one bar more


class TooShortEma(EmaCross):
    def warmup(self) -> int:
        return int(self.params.slow) * 3  # type: ignore[attr-defined]  # the seed still weighs ~1e-4


@pytest.mark.parametrize("cls", [TooShortSma, TooShortEma], ids=lambda c: c.__name__)
def test_a_warmup_too_short_for_the_decision_fails_the_window_check(cls: type[Strategy]) -> None:
    report = _check(cls, _market("1h", ("BTC/USDT",)))
    window = next(c for c in report.checks if c.name == "window")
    assert not window.passed and window.differing > 0
    assert window.first_difference is not None
    assert "window of" in window.first_difference.found


class Peeks(Strategy):
    """Enters when the close two bars ahead is higher: the classic look-ahead bug."""

    def warmup(self) -> int:
        return 2

    def signals(self, bars: Bars) -> Signals:
        ahead = np.roll(bars.close, -2)
        return Signals(entries=ahead > bars.close * 1.002, exits=ahead < bars.close * 0.998)


def test_reading_the_future_with_np_roll_is_caught_and_the_first_bar_named() -> None:
    data = _market("1h", ("BTC/USDT",))
    report = _check(Peeks, data)
    look = next(c for c in report.checks if c.name == "look_ahead")
    assert not look.passed
    first = look.first_difference
    assert first is not None
    # It peeks two bars ahead: the differing decision is at most two bars before the first bar changed.
    changed_after = int(re.search(r"after changing the bars after bar (\d+)", first.found).group(1))  # type: ignore[union-attr]
    assert changed_after - 2 <= first.bar <= changed_after
    assert first.timestamp == int(data.timestamp[first.bar])


def test_ema_warmup_makes_the_window_value_equal_the_full_history_to_1e_12() -> None:
    close = _market("1h", ("BTC/USDT",)).close[:, 0]
    n = ta.ema_warmup(26)
    full = ta.ema(close, 26)[-1]
    windowed = ta.ema(close[-n:], 26)[-1]
    assert abs(windowed - full) <= 1e-12 * abs(full)


@pytest.mark.parametrize("period", [10, 30, 200])
def test_sma_and_bands_on_a_window_equal_the_full_history_bit_for_bit(period: int) -> None:
    # Two-decimal prices make exact ties between averages common; a running sum that carries rounding from
    # earlier bars broke them differently on a window (SmaCross differed once in 19,346 1m bars).
    rng = np.random.default_rng(5)
    close = np.round(30_000 + np.cumsum(rng.normal(0, 5, 50_000)), 2)
    full = ta.sma(close, period)
    upper, _, lower = ta.bollinger(close, period, 2.0)
    for t in rng.integers(period, len(close), 500).tolist():
        window = close[t - period + 1 : t + 1]
        assert ta.sma(window, period)[-1] == full[t]
        w_upper, _, w_lower = ta.bollinger(window, period, 2.0)
        assert (w_upper[-1], w_lower[-1]) == (upper[t], lower[t])


def test_smacross_on_100k_one_minute_bars_has_no_window_difference() -> None:
    report = check_strategy(SmaCross, _minutes(), SimSettings())
    assert report.passed, [c.first_difference for c in report.checks]


def _minutes() -> MarketData:
    tf = parse_timeframe("1m")
    return align({"BTC/USDT": generate("BTC/USDT", tf, NOW - 100_000 * tf.ms, NOW, NOW)}, tf.periods_per_year)


class PeeksWhenOversold(Strategy):
    """Look-ahead on a rare condition: enters when RSI is low and the next close is higher."""

    def warmup(self) -> int:
        return 400

    def signals(self, bars: Bars) -> Signals:
        r = ta.rsi(bars.close, 14)
        nxt = np.append(bars.close[1:], np.nan)
        return Signals(entries=(r < 30) & (nxt > bars.close), exits=r > 70)


def test_a_peek_behind_a_rare_condition_is_caught_at_the_bars_where_the_strategy_decides() -> None:
    report = _check(PeeksWhenOversold, _market("1h", ("BTC/USDT",)))
    look = next(c for c in report.checks if c.name == "look_ahead")
    assert not look.passed and look.first_difference is not None
    assert look.first_difference.expected.startswith("entry")


def test_a_check_without_trades_warns_that_it_proves_little() -> None:
    data = _market("1h", ("BTC/USDT",))
    short = MarketData(
        data.symbols, *(getattr(data, k)[:20] for k in ("timestamp", "open", "high", "low", "close", "volume")),
        data.tradable[:20], data.periods_per_year,
    )  # fmt: skip
    report = _check(SmaCross, short)
    assert report.passed
    assert any("never traded" in w for w in report.warnings)
    assert any("only 20 bars for a window of 31" in w for w in report.warnings)
