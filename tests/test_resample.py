"""Resampling candles to coarser timeframes, including Monday weeks and calendar months."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cracktrader.data.candles import Candles
from cracktrader.data.resample import bucket_starts, can_resample, resample
from cracktrader.data.sources.synthetic import SyntheticSource
from cracktrader.data.timeframes import SUPPORTED_TIMEFRAMES, Timeframe
from cracktrader.errors import InvalidTimeframeError

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a Monday
MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000


def minute_bars(start: int, n: int) -> Candles:
    """Bars with open = i, high = i + 0.5 (peaking at i = 17: 100.5), low = i - 0.25, close = i + 0.25."""
    i = np.arange(n, dtype=np.float64) + 1.0
    high = i + 0.5
    if n > 17:
        high[17] = 100.5
    return Candles(start + np.arange(n, dtype=np.int64) * MIN, i, high, i - 0.25, i + 0.25, np.full(n, 0.5))


def test_sixty_minutes_make_one_hour_with_exact_ohlcv() -> None:
    out = resample(minute_bars(T0, 60), "1m", "1h")
    assert out.timestamp.tolist() == [T0]
    assert out.open.tolist() == [1.0]
    assert out.high.tolist() == [100.5]
    assert out.low.tolist() == [0.75]
    assert out.close.tolist() == [60.25]
    assert out.volume.tolist() == [30.0]


def test_buckets_follow_the_hour_grid_not_the_first_bar() -> None:
    out = resample(minute_bars(T0 + 30 * MIN, 90), "1m", "1h")
    assert out.timestamp.tolist() == [T0, T0 + HOUR]
    assert out.open.tolist() == [1.0, 31.0]
    assert out.close.tolist() == [30.25, 90.25]
    assert out.volume.tolist() == [15.0, 30.0]


def test_missing_bars_inside_a_bucket_are_simply_absent() -> None:
    full = minute_bars(T0, 120)
    keep = np.r_[0:10, 50:120]
    holes = Candles(*(getattr(full, c)[keep] for c in ("timestamp", "open", "high", "low", "close", "volume")))
    out = resample(holes, "1m", "1h")
    assert out.open.tolist() == [1.0, 61.0]
    assert out.volume.tolist() == [30.0 - 20.0, 30.0]


def test_days_make_weeks_that_open_on_monday() -> None:
    thursday = T0 - 4 * DAY  # 2023-12-28
    days = Candles.from_rows([[thursday + k * DAY, k + 1, k + 2, k + 0.5, k + 1.5, 1.0] for k in range(14)])
    out = resample(days, "1d", "1w")
    assert out.timestamp.tolist() == [T0 - 7 * DAY, T0, T0 + 7 * DAY]  # 2023-12-25, 2024-01-01, 2024-01-08
    assert out.open.tolist() == [1.0, 5.0, 12.0]
    assert out.close.tolist() == [4.5, 11.5, 14.5]
    assert out.high.tolist() == [5.0, 12.0, 15.0]
    assert out.volume.tolist() == [4.0, 7.0, 3.0]


def test_days_make_calendar_months_including_a_leap_february() -> None:
    days = Candles.from_rows([[T0 + k * DAY, 1, 2, 0.5, 1.5, 1.0] for k in range(91)])  # 2024-01-01 .. 03-31
    out = resample(days, "1d", "1M")
    assert out.timestamp.tolist() == [1_704_067_200_000, 1_706_745_600_000, 1_709_251_200_000]
    assert out.volume.tolist() == [31.0, 29.0, 31.0]


def test_hours_make_months_across_a_year_end() -> None:
    dec31_22h = T0 - 2 * HOUR
    hours = Candles.from_rows([[dec31_22h + k * HOUR, k + 1, k + 1, k + 1, k + 1, 1.0] for k in range(4)])
    out = resample(hours, "1h", "1M")
    assert out.timestamp.tolist() == [1_701_388_800_000, T0]  # 2023-12-01, 2024-01-01
    assert out.close.tolist() == [2.0, 4.0]
    assert out.volume.tolist() == [2.0, 2.0]


def test_drop_incomplete_removes_only_a_partial_last_bucket() -> None:
    partial = minute_bars(T0, 90)
    assert resample(partial, "1m", "1h", drop_incomplete=True).timestamp.tolist() == [T0]
    assert resample(partial, "1m", "1h").timestamp.tolist() == [T0, T0 + HOUR]
    complete = minute_bars(T0, 120)
    assert resample(complete, "1m", "1h", drop_incomplete=True).timestamp.tolist() == [T0, T0 + HOUR]


@pytest.mark.parametrize(("source", "target"), [("1h", "1m"), ("3d", "1w"), ("1w", "1M"), ("3d", "1M"), ("1M", "1d")])
def test_impossible_resampling_raises_and_explains(source: str, target: str) -> None:
    with pytest.raises(InvalidTimeframeError, match=f"Cannot resample {source} candles to {target}"):
        resample(minute_bars(T0, 3), source, target)


def test_unknown_timeframe_raises() -> None:
    with pytest.raises(InvalidTimeframeError, match="not supported"):
        resample(minute_bars(T0, 3), "1m", "7m")


def test_same_timeframe_returns_the_candles_unchanged() -> None:
    bars = minute_bars(T0, 5)
    assert resample(bars, "1m", "1m") is bars


def test_empty_input_gives_empty_output() -> None:
    assert len(resample(Candles.empty(), "1m", "1h")) == 0


def test_every_supported_pair_that_should_work_does() -> None:
    assert can_resample("1s", "1M") and can_resample("4h", "1w") and can_resample("1d", "3d")
    assert not can_resample("3d", "1w") and not can_resample("1h", "1m")


def test_resampled_synthetic_minutes_are_consistent_hours() -> None:
    minutes = SyntheticSource(now_ms=T0 + 10 * DAY).fetch("BTC/USDT", "1m", T0, T0 + 2 * DAY)
    hours = resample(minutes, "1m", "1h")
    assert len(hours) == 48
    hours.validate()
    assert hours.volume.sum() == pytest.approx(minutes.volume.sum())
    assert hours.high[5] == minutes.high[300:360].max()
    assert hours.open[5] == minutes.open[300] and hours.close[5] == minutes.close[359]


@given(
    st.sampled_from(SUPPORTED_TIMEFRAMES),
    st.lists(st.integers(0, 4_102_444_800_000), min_size=1, max_size=20),
)
def test_bucket_starts_match_timeframe_floor(tf_name: str, stamps: list[int]) -> None:
    tf = Timeframe(tf_name)
    expected = [tf.floor(t) for t in stamps]
    assert bucket_starts(np.array(stamps, dtype=np.int64), tf).tolist() == expected
