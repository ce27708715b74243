"""Aggregate candles from a finer timeframe to a coarser one (e.g. 1m → 1h, 1d → 1w, 1h → 1M)."""

from __future__ import annotations

import numpy as np

from cracktrader.data.candles import COLUMNS, Candles
from cracktrader.data.timeframes import Timeframe, parse_timeframe
from cracktrader.errors import InvalidTimeframeError

_DAY_MS = 86_400_000
_WEEK_OFFSET_MS = 4 * _DAY_MS  # weeks open on Monday, as in Timeframe.floor


def can_resample(source_tf: str | Timeframe, target_tf: str | Timeframe) -> bool:
    """True when every target bucket is made of whole source bars."""
    src, dst = parse_timeframe(source_tf), parse_timeframe(target_tf)
    if src == dst:
        return True
    if dst.is_monthly:
        # Months start at midnight, so any source bar that tiles a day tiles a month.
        return not src.is_monthly and src.ms <= _DAY_MS and _DAY_MS % src.ms == 0
    if src.is_monthly or dst.ms % src.ms:
        return False
    offset = _WEEK_OFFSET_MS if dst.name.endswith("w") else 0
    return offset % src.ms == 0


def bucket_starts(timestamps: np.ndarray, tf: Timeframe) -> np.ndarray:
    """Vectorised Timeframe.floor: the open time of the `tf` bar containing each timestamp."""
    ts = np.asarray(timestamps, dtype=np.int64)
    if tf.is_monthly:
        months = ts.astype("datetime64[ms]").astype("datetime64[M]")
        return months.astype("datetime64[ms]").astype(np.int64)
    offset = _WEEK_OFFSET_MS if tf.name.endswith("w") else 0
    return (ts - offset) // tf.ms * tf.ms + offset


def resample(
    candles: Candles,
    source_tf: str | Timeframe,
    target_tf: str | Timeframe,
    *,
    drop_incomplete: bool = False,
) -> Candles:
    """First open, max high, min low, last close and summed volume per target bar.

    With `drop_incomplete`, the last bucket is dropped unless its final source bar is present
    (typically the bar that is still forming).
    """
    src, dst = parse_timeframe(source_tf), parse_timeframe(target_tf)
    if not can_resample(src, dst):
        raise InvalidTimeframeError(
            f"Cannot resample {src} candles to {dst}: the target must be a coarser timeframe made of whole "
            f"{src} bars (e.g. 1m → 1h, 1h → 1d, 1d → 1w, 1h → 1M)",
            details={"source_timeframe": src.name, "target_timeframe": dst.name},
        )
    if len(candles) == 0:
        return Candles.empty()
    if src == dst:
        return candles
    keys = bucket_starts(candles.timestamp, dst)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(candles)] - 1
    out = Candles(
        keys[starts],
        candles.open[starts],
        np.maximum.reduceat(candles.high, starts),
        np.minimum.reduceat(candles.low, starts),
        candles.close[ends],
        np.add.reduceat(candles.volume, starts),
    )
    if drop_incomplete and _last_bucket_incomplete(candles, src, dst, int(keys[-1])):
        return Candles(*(getattr(out, c)[:-1] for c in COLUMNS))
    return out


def _last_bucket_incomplete(candles: Candles, src: Timeframe, dst: Timeframe, last_key: int) -> bool:
    """Whether the final source bar of the last target bucket is missing."""
    return src.next(int(candles.timestamp[-1])) < dst.next(last_key)
