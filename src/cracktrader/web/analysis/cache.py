"""A small LRU of what finished runs' charts cost to rebuild: round trips, candles and indicator series.

A finished run's results never change, and its id is never reused: entries need no invalidation, only a bound
(a 1 M-bar run's candles and series are about 60 MB, so a few entries at most). Callers still check that the
caller may read the run before they use an entry.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

MAX_ENTRIES = 4
FINISHED = frozenset({"completed", "failed", "stopped"})


class LruCache:
    """Thread-safe least-recently-used mapping with at most `size` entries."""

    def __init__(self, size: int = MAX_ENTRIES) -> None:
        self._size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._guard = threading.Lock()

    def get(self, key: Any) -> Any:
        """The entry, or None."""
        with self._guard:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Any, value: Any) -> None:
        """Keep `value`, dropping the least recently used entry when full."""
        with self._guard:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


ROUND_TRIPS = LruCache(16)  # a few MB each at most
CHARTS = LruCache(MAX_ENTRIES)
