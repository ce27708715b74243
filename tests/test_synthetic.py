"""The offline synthetic exchange: determinism, realism, bounds and speed."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import numpy as np
import pytest

from cracktrader.data.candles import COLUMNS, Candles
from cracktrader.data.sources import synthetic
from cracktrader.data.sources.synthetic import EPOCH_MS, SyntheticSource
from cracktrader.data.timeframes import SUPPORTED_TIMEFRAMES, Timeframe
from cracktrader.errors import InvalidDateRangeError, InvalidSymbolError

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z, pinned so results do not depend on the wall clock
DAY = 86_400_000
T2024 = 1_704_067_200_000


@pytest.fixture
def source() -> SyntheticSource:
    return SyntheticSource(now_ms=NOW)


def same(a: Candles, b: Candles) -> bool:
    return all(np.array_equal(getattr(a, c), getattr(b, c)) for c in COLUMNS)


def abs_return_autocorrelation(close: np.ndarray, lag: int = 1) -> float:
    r = np.abs(np.diff(np.log(close)))
    r = r - r.mean()
    return float((r[lag:] * r[:-lag]).mean() / r.var())


@pytest.mark.parametrize("tf", ["1s", "1m", "5m", "1h", "4h", "1d", "3d", "1w", "1M"])
def test_a_bar_is_the_same_whatever_range_is_requested(source: SyntheticSource, tf: str) -> None:
    t = Timeframe(tf)
    span = 400 * t.ms if not t.is_monthly else 40 * 31 * DAY
    start = t.floor(T2024 - span // 2)
    wide = source.fetch("BTC/USDT", t, start, start + span)
    assert len(wide) >= 40
    mid = len(wide) // 2
    narrow = source.fetch("BTC/USDT", t, int(wide.timestamp[mid - 3]), int(wide.timestamp[mid + 4]))
    assert same(narrow, wide.slice_time(int(wide.timestamp[mid - 3]), int(wide.timestamp[mid + 4])))
    # A range that is not aligned to the grid yields the same bars too.
    shifted = source.fetch("BTC/USDT", t, int(wide.timestamp[mid]) - 1, int(wide.timestamp[mid]) + 1)
    assert same(shifted, wide.slice_time(int(wide.timestamp[mid]), int(wide.timestamp[mid]) + 1))


def test_generating_in_chunks_gives_the_same_bars(source: SyntheticSource, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = source.fetch("ETH/USDT", "1m", T2024, T2024 + 5000 * 60_000)
    monkeypatch.setattr(synthetic, "_CHUNK_BARS", 777)
    progress: list[tuple[int, int]] = []
    chunked = source.fetch("ETH/USDT", "1m", T2024, T2024 + 5000 * 60_000, lambda n, total: progress.append((n, total)))
    assert same(whole, chunked)
    assert progress[-1] == (5000, 5000)
    assert len(progress) == 7


def test_values_do_not_depend_on_the_python_hash_seed(source: SyntheticSource) -> None:
    code = (
        "from cracktrader.data.sources.synthetic import SyntheticSource;"
        f"c = SyntheticSource(now_ms={NOW}).fetch('SOL/USDT', '1h', {T2024}, {T2024 + 50 * 3_600_000});"
        "print(repr(float(c.close.sum())), repr(float(c.volume.sum())))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    here = source.fetch("SOL/USDT", "1h", T2024, T2024 + 50 * 3_600_000)
    assert out.stdout.split() == [repr(float(here.close.sum())), repr(float(here.volume.sum()))]


@pytest.mark.parametrize("tf", SUPPORTED_TIMEFRAMES)
def test_candles_are_valid_ohlc_with_positive_volume(source: SyntheticSource, tf: str) -> None:
    t = Timeframe(tf)
    end = NOW if t.ms >= DAY else T2024 + 3000 * t.ms
    candles = source.fetch("XRP/USDT", t, T2024 - 3000 * t.ms if t.ms < DAY else 0, end)
    assert len(candles) > 0
    candles.validate()
    assert np.all(candles.volume > 0)
    assert np.all(candles.high >= np.maximum(candles.open, candles.close))
    assert np.all(candles.low <= np.minimum(candles.open, candles.close))
    assert np.array_equal(candles.timestamp, t.grid(int(candles.timestamp[0]), int(candles.timestamp[-1]) + 1))


def test_absolute_returns_cluster(source: SyntheticSource) -> None:
    minutes = source.fetch("BTC/USDT", "1m", T2024, T2024 + 30 * DAY)
    days = source.fetch("BTC/USDT", "1d", EPOCH_MS, NOW)
    assert abs_return_autocorrelation(minutes.close) > 0.1
    assert abs_return_autocorrelation(days.close) > 0.05
    shuffled = np.random.default_rng(0).permutation(np.diff(np.log(minutes.close)))
    assert abs(abs_return_autocorrelation(np.exp(np.cumsum(shuffled)))) < 0.03


def test_daily_volatility_matches_the_asset(source: SyntheticSource) -> None:
    btc = np.diff(np.log(source.fetch("BTC/USDT", "1d", EPOCH_MS, NOW).close)).std()
    stable = np.diff(np.log(source.fetch("USDC/USDT", "1d", EPOCH_MS, NOW).close)).std()
    assert 0.02 < btc < 0.045
    assert stable < 0.002


def test_next_open_is_close_to_but_not_always_equal_to_the_previous_close(source: SyntheticSource) -> None:
    c = source.fetch("BTC/USDT", "1m", T2024, T2024 + 5 * DAY)
    gap = np.abs(c.open[1:] / c.close[:-1] - 1.0)
    assert np.mean(gap > 0) > 0.5
    assert np.median(gap) < 1e-4
    assert gap.max() < 2e-3


@pytest.mark.parametrize(
    ("symbol", "typical"),
    [("BTC/USDT", 30_000.0), ("ETH/USDT", 2_000.0), ("ETH/BTC", 2_000.0 / 30_000.0), ("BTC/EUR", 27_800.0)],
)
def test_prices_stay_near_familiar_levels(source: SyntheticSource, symbol: str, typical: float) -> None:
    c = source.fetch(symbol, "1d", EPOCH_MS, NOW)
    assert typical / 2 < np.median(c.close) < typical * 2
    # Eleven years of a volatile walk roam widely, but mean reversion keeps it within an order of magnitude.
    assert typical / 12 < c.low.min() and c.high.max() < typical * 12


def test_unknown_symbols_get_a_stable_price_from_their_name(source: SyntheticSource) -> None:
    a = source.fetch("ZZZ/USDT", "1d", T2024, T2024 + 10 * DAY)
    b = SyntheticSource(now_ms=NOW).fetch("ZZZ/USDT", "1d", T2024, T2024 + 10 * DAY)
    other = source.fetch("QQQ/USDT", "1d", T2024, T2024 + 10 * DAY)
    assert same(a, b)
    assert not np.array_equal(a.close, other.close)
    assert 1e-4 < a.close[0] < 1e4


def test_symbol_case_does_not_change_the_market(source: SyntheticSource) -> None:
    assert same(source.fetch("btc/usdt", "1h", T2024, T2024 + DAY), source.fetch("BTC/USDT", "1h", T2024, T2024 + DAY))


def test_daily_path_is_shared_by_daily_and_weekly_bars(source: SyntheticSource) -> None:
    monday = 1_704_067_200_000  # 2024-01-01 was a Monday
    week = source.fetch("BTC/USDT", "1w", monday, monday + 7 * DAY)
    days = source.fetch("BTC/USDT", "1d", monday, monday + 7 * DAY)
    assert len(week) == 1 and len(days) == 7
    assert week.close[0] == days.close[-1]
    assert week.high[0] == pytest.approx(days.high.max(), rel=1e-3)
    assert week.low[0] == pytest.approx(days.low.min(), rel=1e-3)
    assert week.volume[0] == pytest.approx(days.volume.sum(), rel=1e-6)


def test_no_candles_before_2015(source: SyntheticSource) -> None:
    c = source.fetch("BTC/USDT", "1d", EPOCH_MS - 30 * DAY, EPOCH_MS + 3 * DAY)
    assert c.timestamp.tolist() == [EPOCH_MS, EPOCH_MS + DAY, EPOCH_MS + 2 * DAY]
    assert len(source.fetch("BTC/USDT", "1h", 0, EPOCH_MS)) == 0


def test_only_bars_closed_by_now_are_returned() -> None:
    now = T2024 + 10 * 3_600_000 + 123  # 10:00:00.123, during the 10:00 bar
    c = SyntheticSource(now_ms=now).fetch("BTC/USDT", "1h", T2024, T2024 + 2 * DAY)
    assert int(c.timestamp[-1]) == T2024 + 9 * 3_600_000
    assert len(SyntheticSource(now_ms=now).fetch("BTC/USDT", "1d", T2024, T2024 + 2 * DAY)) == 0


def test_monthly_and_weekly_bars_open_on_calendar_boundaries(source: SyntheticSource) -> None:
    months = source.fetch("BTC/USDT", "1M", T2024, NOW)
    opens = [datetime.fromtimestamp(t / 1000, tz=UTC) for t in months.timestamp.tolist()]
    assert len(months) == 24
    assert all(d.day == 1 and d.hour == 0 for d in opens)
    weeks = source.fetch("BTC/USDT", "1w", T2024, NOW)
    assert all(datetime.fromtimestamp(t / 1000, tz=UTC).weekday() == 0 for t in weeks.timestamp.tolist())


@pytest.mark.parametrize("bad", ["BTCUSDT", "BTC/", "/USDT", "BTC/USDT/EUR", "", "BTC USDT", "BTC/US DT"])
def test_malformed_symbol_raises_with_examples(source: SyntheticSource, bad: str) -> None:
    with pytest.raises(InvalidSymbolError) as info:
        source.fetch(bad, "1h", T2024, T2024 + DAY)
    assert "BASE/QUOTE" in info.value.message
    assert "BTC/USDT" in info.value.details["supported_symbols"]


def test_swap_style_symbols_are_accepted(source: SyntheticSource) -> None:
    source.validate_symbol("BTC/USDT:USDT")
    assert len(source.fetch("BTC/USDT:USDT", "1h", T2024, T2024 + DAY)) == 24


def test_huge_requests_are_refused_with_advice(source: SyntheticSource) -> None:
    with pytest.raises(InvalidDateRangeError, match="shorter range or a longer timeframe"):
        source.fetch("BTC/USDT", "1s", EPOCH_MS, NOW)


def test_source_metadata(source: SyntheticSource) -> None:
    assert source.exchange_id == "synthetic"
    assert "BTC/USDT" in source.symbols() and "ETH/USDT" in source.symbols()
    assert source.fee_rates("BTC/USDT") is None
    source.close()


def test_a_million_minute_bars_generate_whole_and_the_same_each_time(source: SyntheticSource) -> None:
    # Its speed (~0.2 s) is a benchmark's business: a timed assertion failed on a loaded machine.
    c = source.fetch("BTC/USDT", "1m", T2024 - 1_000_000 * 60_000, T2024)
    assert len(c) == 1_000_000
    again = source.fetch("BTC/USDT", "1m", T2024 - 1_000_000 * 60_000, T2024)
    assert np.array_equal(c.timestamp, again.timestamp) and np.array_equal(c.close, again.close)
