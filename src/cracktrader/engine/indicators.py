"""Indicator helpers over TA-Lib, plus signal utilities such as crossovers.

The `*_warmup` functions give the bars an indicator's last value needs so that, computed on that many bars,
it equals the full-history value to RECURSIVE_TOLERANCE (relative to the seed's error): exact for windowed
indicators (SMA, bands, highs and lows), and long enough for the recursive ones (EMA, RSI, MACD), whose seed's
influence decays geometrically. Strategies add them up to return an exact `warmup()`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import numpy as np
import talib
from numba import njit

# Weight left of a recursive indicator's seed once its warm-up has passed: 1e-12 of the seed's error keeps
# decisions identical to the full history far beyond the 1e-9 that float rounding already moves them.
RECURSIVE_TOLERANCE = 1e-12


T = TypeVar("T")


class IndicatorCache:
    """Indicator values by (function, input array, arguments): a sweep computes each distinct window once.

    Entries keep their input array, so its id cannot be reused by another array while cached. Cached arrays are
    read-only: combinations share them.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, int, tuple[Any, ...]], tuple[np.ndarray, Any]] = {}
        self._lock = threading.Lock()

    def get(self, name: str, values: np.ndarray, args: tuple[Any, ...], compute: Callable[[], T]) -> T:
        """The cached value, computing it on the first request (two threads may both compute it: same value)."""
        key = (name, id(values), args)
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and entry[0] is values:
            result: T = entry[1]
            return result
        value = compute()
        for arr in value if isinstance(value, tuple) else (value,):
            if isinstance(arr, np.ndarray):
                arr.setflags(write=False)
        with self._lock:
            stored: T = self._entries.setdefault(key, (values, value))[1]
        return stored

    def __len__(self) -> int:
        return len(self._entries)


_ACTIVE: ContextVar[IndicatorCache | None] = ContextVar("cracktrader_indicator_cache", default=None)


@contextmanager
def cached_indicators(cache: IndicatorCache) -> Iterator[IndicatorCache]:
    """Within the block, the indicator functions below memoize their results in `cache`."""
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)


def _memo(name: str, values: np.ndarray, args: tuple[Any, ...], compute: Callable[[], T]) -> T:
    cache = _ACTIVE.get()
    return compute() if cache is None else cache.get(name, values, args, compute)


def _f64(values: np.ndarray) -> np.ndarray:
    # TA-Lib needs contiguous float64 input; views of (n, 1) arrays are strided.
    return np.ascontiguousarray(values, dtype=np.float64)


@njit(cache=True, nogil=True)
def _rolling_sum(x: np.ndarray, period: int, divisor: float) -> np.ndarray:
    """Sum of each window of `period` values over `divisor`: the exact sum rounded once (NaN while one is missing).

    TA-Lib's running sum carries rounding from every earlier bar, so a window's sum depended on where the history
    started: on 1m prices with two decimals, SMA(10) and SMA(30) tie exactly often enough that a crossover
    decided in the full history flipped on a live window. Here the running sum is an unevaluated pair hi + lo:
    `lo` collects the exact rounding error of every addition and subtraction of `hi` (Knuth's two-sum), so
    hi + lo is the exact window sum while the values span under ~100 bits, and its one rounding makes each output
    a function of its window alone.
    """
    n = x.shape[0]
    out = np.full(n, np.nan)
    hi = 0.0
    lo = 0.0
    valid = 0  # consecutive finite values ending at t
    for t in range(n):
        v = x[t]
        if v != v:
            hi = 0.0
            lo = 0.0
            valid = 0
            continue
        if valid >= period:
            # The change of the window (new minus leaving value) first, then one addition on the loop's critical
            # path instead of two; both roundings' errors go to `lo`.
            old = -x[t - period]
            d = v + old
            bb = d - v
            e1 = (v - (d - bb)) + (old - bb)
            s = hi + d
            bb = s - hi
            lo += e1 + ((hi - (s - bb)) + (d - bb))
            hi = s
            out[t] = (hi + lo) / divisor
        else:
            s = hi + v
            bb = s - hi
            lo += (hi - (s - bb)) + (v - bb)
            hi = s
            valid += 1
            if valid >= period:
                out[t] = (hi + lo) / divisor
    return out


def rolling_sum(values: np.ndarray, period: int) -> np.ndarray:
    """Sum of the last `period` values, exact per window (NaN during warm-up or after a missing value)."""
    return np.asarray(_rolling_sum(_f64(values), int(period), 1.0))


def _sma(values: np.ndarray, period: int) -> np.ndarray:
    return np.asarray(_rolling_sum(_f64(values), int(period), float(period)))


def sma(values: np.ndarray, period: int) -> np.ndarray:
    """Simple moving average (NaN during warm-up); the same value on any history that holds its window."""
    return _memo("sma", values, (int(period),), lambda: _sma(values, period))


def ema(values: np.ndarray, period: int) -> np.ndarray:
    """Exponential moving average seeded with the SMA, as TA-Lib defines it."""
    return _memo("ema", values, (int(period),), lambda: np.asarray(talib.EMA(_f64(values), timeperiod=period)))


def rsi(values: np.ndarray, period: int) -> np.ndarray:
    """Wilder's relative strength index."""
    return _memo("rsi", values, (int(period),), lambda: np.asarray(talib.RSI(_f64(values), timeperiod=period)))


def bollinger(values: np.ndarray, period: int, stdev: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(upper, middle, lower) Bollinger bands: the SMA plus and minus `stdev` population standard deviations.

    As TA-Lib's BBANDS, but from exact window sums (see `rolling_sum`), so each band depends on its window only.
    """
    middle, variance = band_parts(values, period)
    width = stdev * np.sqrt(variance)
    return middle + width, middle, middle - width


def band_parts(values: np.ndarray, period: int) -> tuple[np.ndarray, np.ndarray]:
    """(middle band, population variance) of each window: what `bollinger` derives every band width from."""
    return _memo("bands", values, (int(period),), lambda: _band_parts(_f64(values), period))


def _band_parts(x: np.ndarray, period: int) -> tuple[np.ndarray, np.ndarray]:
    """The middle band and the population variance of each window (what every band width shares)."""
    middle = _sma(x, period)
    return middle, np.maximum(_sma(x * x, period) - middle * middle, 0.0)


def macd(values: np.ndarray, fast: int, slow: int, signal: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(macd, signal, histogram)."""

    def compute() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        line, sig, hist = talib.MACD(_f64(values), fastperiod=fast, slowperiod=slow, signalperiod=signal)
        return np.asarray(line), np.asarray(sig), np.asarray(hist)

    return _memo("macd", values, (int(fast), int(slow), int(signal)), compute)


def rolling_max(values: np.ndarray, period: int) -> np.ndarray:
    """Highest value of the last `period` bars, including the current one."""
    return _memo("max", values, (int(period),), lambda: np.asarray(talib.MAX(_f64(values), timeperiod=period)))


def rolling_min(values: np.ndarray, period: int) -> np.ndarray:
    """Lowest value of the last `period` bars, including the current one."""
    return _memo("min", values, (int(period),), lambda: np.asarray(talib.MIN(_f64(values), timeperiod=period)))


def shift(values: np.ndarray, periods: int = 1, fill: float = np.nan) -> np.ndarray:
    """Values of `periods` bars ago (never of future bars)."""
    if periods < 0:
        raise ValueError("shift by a negative period would look ahead")
    out = np.empty_like(values, dtype=np.float64)
    out[:periods] = fill
    out[periods:] = values[: values.shape[0] - periods]
    return out


@njit(cache=True, nogil=True)
def crosses(a_prev: float, a_now: float, b_prev: float, b_now: float, up: bool) -> bool:
    """Whether `a` crosses `b` (above when `up`, else below) between two bars; a NaN on the previous bar is not one."""
    if a_prev != a_prev or b_prev != b_prev:
        return False
    if up:
        return a_now > b_now and not a_prev > b_prev
    return a_now < b_now and not a_prev < b_prev


@njit(cache=True, nogil=True)
def _crossed(a: np.ndarray, b: np.ndarray, up: bool) -> np.ndarray:
    out = np.zeros(a.shape[0], dtype=np.bool_)
    for t in range(1, a.shape[0]):
        out[t] = crosses(a[t - 1], a[t], b[t - 1], b[t], up)
    return out


@njit(cache=True, nogil=True)
def _crossed_level(a: np.ndarray, level: float, up: bool) -> np.ndarray:
    out = np.zeros(a.shape[0], dtype=np.bool_)
    for t in range(1, a.shape[0]):
        out[t] = crosses(a[t - 1], a[t], level, level, up)
    return out


def _cross(a: np.ndarray, b: np.ndarray | float, up: bool) -> np.ndarray:
    if isinstance(b, np.ndarray):
        return np.asarray(_crossed(_f64(a), _f64(b), up))
    return np.asarray(_crossed_level(_f64(a), float(b), up))


def crossed_above(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """True on bars where `a` closes above `b` after closing at or below it on the previous bar."""
    return _cross(a, b, True)


def crossed_below(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """True on bars where `a` closes below `b` after closing at or above it on the previous bar."""
    return _cross(a, b, False)


def _decay_bars(alpha: float) -> int:
    """Bars after which a recursive filter with smoothing `alpha` keeps RECURSIVE_TOLERANCE of its seed."""
    return math.ceil(math.log(RECURSIVE_TOLERANCE) / math.log(1.0 - alpha))


def sma_warmup(period: int) -> int:
    """Bars `sma(values, period)` needs for its last value: exactly `period`."""
    return period


def ema_warmup(period: int) -> int:
    """Bars `ema(values, period)` needs for its last value to match the full history (seed SMA + decay)."""
    return period + _decay_bars(2.0 / (period + 1))


def rsi_warmup(period: int) -> int:
    """Bars `rsi(values, period)` needs: one change more than the prices, then Wilder's decay (1/period)."""
    return period + 1 + _decay_bars(1.0 / period)


def macd_warmup(fast: int, slow: int, signal: int) -> int:
    """Bars `macd(...)` needs: the slower EMA's warm-up, then the signal line's EMA over the MACD line."""
    return ema_warmup(max(fast, slow)) + ema_warmup(signal)


def cross_warmup(bars: int) -> int:
    """Bars a crossover of indicators needing `bars` needs: one more, for the previous bar's side."""
    return bars + 1
