"""Candles thinned for a chart: consecutive bars merged into OHLC buckets (first open, max high, min low, ...)."""

from __future__ import annotations

import math

import numpy as np

from cracktrader.data.candles import Candles


def bucket_size(n: int, max_points: int) -> int:
    """Bars per bucket so that `n` bars make at most `max_points` buckets (1: no thinning)."""
    return max(1, math.ceil(n / max(1, max_points)))


def bucket_starts(n: int, size: int) -> np.ndarray:
    """Index of each bucket's first bar."""
    return np.arange(0, n, size, dtype=np.int64)


def bucket_candles(candles: Candles, size: int) -> Candles:
    """Every `size` consecutive bars as one: open of the first, high max, low min, close of the last, volume sum."""
    n = len(candles)
    if size <= 1 or n == 0:
        return candles
    starts = bucket_starts(n, size)
    lasts = np.minimum(starts + size, n) - 1
    return Candles(
        candles.timestamp[starts],
        candles.open[starts],
        np.maximum.reduceat(candles.high, starts),
        np.minimum.reduceat(candles.low, starts),
        candles.close[lasts],
        np.add.reduceat(candles.volume, starts),
    )


def bucket_last(values: np.ndarray, size: int) -> np.ndarray:
    """A per-bar series at each bucket's last bar (an indicator lines up with the bucket's close)."""
    n = values.shape[0]
    if size <= 1 or n == 0:
        return values
    return values[np.minimum(bucket_starts(n, size) + size, n) - 1]
