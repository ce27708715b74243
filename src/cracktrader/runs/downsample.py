"""Thin long series for display while keeping their extremes."""

from __future__ import annotations

import numpy as np


def extreme_preserving_indices(values: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most `max_points` points: first, last, and each bucket's minimum and maximum.

    Keeping every bucket's extremes means the global peak and trough (and so the drawdown a chart shows)
    survive any amount of thinning.
    """
    n = int(values.shape[0])
    if n <= max_points or n <= 2:
        return np.arange(n)
    buckets = max(1, (max_points - 2) // 2)
    edges = np.linspace(1, n - 1, buckets + 1).astype(np.int64)
    keep = [0, n - 1]
    for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        if hi <= lo:
            continue
        chunk = values[lo:hi]
        keep.append(lo + int(np.argmin(chunk)))
        keep.append(lo + int(np.argmax(chunk)))
    return np.unique(np.asarray(keep, dtype=np.int64))
