"""Completed chunks of a sweep on disk, keyed by a hash of its data, code, costs and parameters, so a rerun resumes.

Rows are JSON (never pickle: a cache folder must not be a way to run code); floats round-trip exactly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cracktrader.engine.broker import SimSettings
from cracktrader.engine.market import MarketData
from cracktrader.engine.strategy import StrategyParams
from cracktrader.sweeps.code import StrategyCode, engine_fingerprint
from cracktrader.sweeps.grid import Combination
from cracktrader.sweeps.plans import Metrics, SweepRow

log = logging.getLogger(__name__)
_FORMAT = "1"


def sweep_key(
    code: StrategyCode,
    data: MarketData,
    sim: SimSettings,
    metrics: Sequence[str],
    combos: Sequence[tuple[Combination, StrategyParams]],
) -> str:
    """SHA-256 of everything a sweep's rows depend on: candles, strategy and engine code, costs, metrics, grid."""
    h = hashlib.sha256(f"{_FORMAT}|{engine_fingerprint()}|{code.name}|{code.sha256}".encode())
    h.update(json.dumps([list(data.symbols), repr(data.periods_per_year)]).encode())
    for name in ("timestamp", "open", "high", "low", "close", "volume", "tradable"):
        arr = np.ascontiguousarray(getattr(data, name))
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}".encode())
        h.update(arr.tobytes())
    h.update(repr(sim).encode())
    h.update(json.dumps(list(metrics)).encode())
    for combo, params in combos:
        h.update(json.dumps([combo.index, params.model_dump(mode="json")], sort_keys=True, default=repr).encode())
    return h.hexdigest()


def _plain(value: Any) -> float | int | None:
    """A metric as a JSON number of the same value (numpy scalars included)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, np.integer):
        return int(value)
    return float(value)


class ChunkCache:
    """One sweep's folder of completed chunks: one JSON file per chunk, written whole or not at all."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def for_sweep(cls, root: Path, key: str) -> ChunkCache:
        """The folder of the sweep with this key under the cache root."""
        return cls(Path(root).expanduser() / key[:2] / key)

    def load(self, combos: Sequence[tuple[Combination, StrategyParams]]) -> dict[int, SweepRow]:
        """The cached rows of these combinations by index (the key covers the grid, so indices match)."""
        by_index = {combo.index: combo for combo, _ in combos}
        rows: dict[int, SweepRow] = {}
        if not self.folder.is_dir():
            return rows
        for path in sorted(self.folder.glob("*.json")):
            try:
                entries = json.loads(path.read_text())["rows"]
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("Ignoring an unreadable sweep cache file %s", path)
                continue
            for index, metrics in entries:
                combo = by_index.get(index)
                if combo is not None:
                    rows[index] = SweepRow(index, combo.params, metrics)
        return rows

    def store(self, rows: Sequence[SweepRow]) -> None:
        """Keep a completed chunk's rows; a failure to write costs a recompute later, never the sweep."""
        if not rows:
            return
        entries: list[tuple[int, Metrics]] = [(r.index, {k: _plain(v) for k, v in r.metrics.items()}) for r in rows]
        name = f"{rows[0].index:09d}-{rows[-1].index:09d}-{uuid.uuid4().hex[:8]}.json"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            partial = self.folder / f".{name}.part"
            partial.write_text(json.dumps({"rows": entries}))
            partial.replace(self.folder / name)
        except OSError as exc:
            log.warning("Could not cache sweep rows in %s: %s", self.folder, exc)
