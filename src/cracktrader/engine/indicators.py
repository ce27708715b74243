"""Indicator helpers over TA-Lib, plus signal utilities such as crossovers."""

from __future__ import annotations

import numpy as np
import talib


def _f64(values: np.ndarray) -> np.ndarray:
    # TA-Lib needs contiguous float64 input; views of (n, 1) arrays are strided.
    return np.ascontiguousarray(values, dtype=np.float64)


def sma(values: np.ndarray, period: int) -> np.ndarray:
    """Simple moving average (NaN during warm-up)."""
    return np.asarray(talib.SMA(_f64(values), timeperiod=period))


def ema(values: np.ndarray, period: int) -> np.ndarray:
    """Exponential moving average seeded with the SMA, as TA-Lib defines it."""
    return np.asarray(talib.EMA(_f64(values), timeperiod=period))


def rsi(values: np.ndarray, period: int) -> np.ndarray:
    """Wilder's relative strength index."""
    return np.asarray(talib.RSI(_f64(values), timeperiod=period))


def bollinger(values: np.ndarray, period: int, stdev: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(upper, middle, lower) Bollinger bands."""
    upper, middle, lower = talib.BBANDS(_f64(values), timeperiod=period, nbdevup=stdev, nbdevdn=stdev)
    return np.asarray(upper), np.asarray(middle), np.asarray(lower)


def macd(values: np.ndarray, fast: int, slow: int, signal: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(macd, signal, histogram)."""
    line, sig, hist = talib.MACD(_f64(values), fastperiod=fast, slowperiod=slow, signalperiod=signal)
    return np.asarray(line), np.asarray(sig), np.asarray(hist)


def rolling_max(values: np.ndarray, period: int) -> np.ndarray:
    """Highest value of the last `period` bars, including the current one."""
    return np.asarray(talib.MAX(_f64(values), timeperiod=period))


def rolling_min(values: np.ndarray, period: int) -> np.ndarray:
    """Lowest value of the last `period` bars, including the current one."""
    return np.asarray(talib.MIN(_f64(values), timeperiod=period))


def shift(values: np.ndarray, periods: int = 1, fill: float = np.nan) -> np.ndarray:
    """Values of `periods` bars ago (never of future bars)."""
    if periods < 0:
        raise ValueError("shift by a negative period would look ahead")
    out = np.empty_like(values, dtype=np.float64)
    out[:periods] = fill
    out[periods:] = values[: values.shape[0] - periods]
    return out


def crossed_above(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """True on bars where `a` closes above `b` after closing at or below it on the previous bar."""
    above = a > b
    out = np.zeros(above.shape[0], dtype=np.bool_)
    out[1:] = above[1:] & ~above[:-1]
    # A NaN on the previous bar (warm-up) is not a cross.
    prev_valid = ~np.isnan(a[:-1]) & (~np.isnan(b[:-1]) if isinstance(b, np.ndarray) else True)
    out[1:] &= prev_valid
    return out


def crossed_below(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """True on bars where `a` closes below `b` after closing at or above it on the previous bar."""
    below = a < b
    out = np.zeros(below.shape[0], dtype=np.bool_)
    out[1:] = below[1:] & ~below[:-1]
    prev_valid = ~np.isnan(a[:-1]) & (~np.isnan(b[:-1]) if isinstance(b, np.ndarray) else True)
    out[1:] &= prev_valid
    return out
