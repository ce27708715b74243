"""Local Parquet candle store: one file per exchange/symbol/timeframe, written atomically, with coverage."""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cracktrader.data.candles import COLUMNS, Candles
from cracktrader.data.timeframes import SUPPORTED_TIMEFRAMES, Timeframe, parse_timeframe
from cracktrader.errors import DataUnavailableError, InvalidDataError

try:  # POSIX only; elsewhere the in-process lock still serialises writers of one process.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

Interval = tuple[int, int]

_SUFFIX = ".parquet"
_META_PREFIX = b"cracktrader."
_FORMAT_VERSION = "1"
# Row groups let a narrow read skip most of a large file while a full read stays a single chunk.
_ROW_GROUP_SIZE = 1 << 18
_SCHEMA = pa.schema(
    [("timestamp", pa.int64())] + [(name, pa.float64()) for name in COLUMNS[1:]],
)
_SAFE_CHAR = re.compile(r"[A-Za-z0-9._]")
# `1m` and `1M` would collide on case-insensitive file systems (macOS, Windows), so months get a suffix.
_TF_FILE_NAMES = {tf: (tf[:-1] + "mo" if tf.endswith("M") else tf) for tf in SUPPORTED_TIMEFRAMES}
_TF_FROM_FILE = {v: k for k, v in _TF_FILE_NAMES.items()}

_process_locks: dict[Path, threading.Lock] = {}
_process_locks_guard = threading.Lock()
# A temp file is a leftover once its dataset's lock can be taken (writers hold it from creating the file to
# renaming it). Without cross-process locks (Windows) a file must also be this old, as another process may own it.
STALE_TMP_S = 60.0


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """What is stored for one exchange/symbol/timeframe."""

    exchange: str
    symbol: str
    timeframe: str
    first: int | None  # open time of the first stored bar (ms), None when no rows are stored
    last: int | None  # open time of the last stored bar (ms)
    count: int
    gaps: list[Interval]  # [start, end) runs of missing bars between first and last
    path: Path
    size_bytes: int
    coverage: list[Interval] = field(default_factory=list)  # [start, end) ranges already fetched

    @property
    def missing_bars(self) -> int:
        """Bars missing between the first and the last stored bar."""
        tf = parse_timeframe(self.timeframe)
        return sum(tf.count(start, end) for start, end in self.gaps)

    @property
    def largest_gap(self) -> tuple[int, int, int] | None:
        """(start, end, missing bars) of the widest gap (the earliest of equals); None without gaps."""
        tf = parse_timeframe(self.timeframe)
        sized = [(tf.count(start, end), -start, end) for start, end in self.gaps]
        if not sized:
            return None
        bars, neg_start, end = max(sized)
        return -neg_start, end, bars

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form for the CLI and API."""
        out = asdict(self)
        out["path"] = str(self.path)
        out["gaps"] = [list(g) for g in self.gaps]
        out["coverage"] = [list(c) for c in self.coverage]
        return out


def safe_name(text: str) -> str:
    """A reversible, file-system-safe name: `BTC/USDT` → `BTC-USDT`, other odd characters %-escaped."""
    out: builtins.list[str] = []
    for ch in text:
        if ch == "/":
            out.append("-")
        elif _SAFE_CHAR.fullmatch(ch):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode())
    return "".join(out)


def merge_intervals(intervals: builtins.list[Interval]) -> builtins.list[Interval]:
    """Sort and merge overlapping or touching [start, end) intervals, dropping empty ones."""
    merged: builtins.list[Interval] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def subtract_intervals(start: int, end: int, covered: builtins.list[Interval]) -> builtins.list[Interval]:
    """[start, end) minus the merged, sorted `covered` intervals."""
    out: builtins.list[Interval] = []
    cursor = start
    for c_start, c_end in covered:
        if c_end <= cursor:
            continue
        if c_start >= end:
            break
        if c_start > cursor:
            out.append((cursor, c_start))
        cursor = max(cursor, c_end)
    if cursor < end:
        out.append((cursor, end))
    return out


def _fsync_dir(path: Path) -> None:
    """Persist a rename; directories cannot be opened for fsync on Windows."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _dataset_lock(path: Path) -> Iterator[None]:
    """Serialise read-merge-write cycles on one dataset across threads and processes."""
    with _process_lock(path):
        if fcntl is None:  # pragma: no cover - Windows
            yield
            return
        lock_path = path.with_name("." + path.name + ".lock")
        with open(lock_path, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _process_lock(path: Path) -> threading.Lock:
    with _process_locks_guard:
        return _process_locks.setdefault(path, threading.Lock())


@contextlib.contextmanager
def _dataset_unlocked(path: Path) -> Iterator[bool]:
    """Take `path`'s lock if nobody holds it, without waiting; yields whether it was taken."""
    lock = _process_lock(path)
    if not lock.acquire(blocking=False):
        yield False
        return
    try:
        if fcntl is None:  # pragma: no cover - Windows
            yield True
            return
        try:
            # Never created here: a writer makes the lock file before its temp file, so one without it is foreign.
            fd = os.open(path.with_name("." + path.name + ".lock"), os.O_RDWR)
        except OSError:
            yield False
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
    finally:
        lock.release()


def _temp_files(folder: Path) -> dict[str, builtins.list[Path]]:
    """Temp files of `_write_atomic` in `folder` (`.<dataset file>.<random>.tmp`), by dataset file name."""
    out: dict[str, builtins.list[Path]] = {}
    for tmp in folder.glob(f".*{_SUFFIX}.*.tmp"):
        dataset = tmp.name[1:].removesuffix(".tmp").rsplit(".", 1)[0]
        out.setdefault(dataset, []).append(tmp)
    return out


def _remove_stale(temps: builtins.list[Path]) -> None:
    now = time.time()
    for tmp in temps:
        with contextlib.suppress(OSError):  # gone already, or not ours to delete
            if fcntl is not None or now - tmp.stat().st_mtime > STALE_TMP_S:
                tmp.unlink()


def remove_stale_temp_files(path: Path) -> None:
    """Delete temp files that killed writers left beside `path`; the caller holds `path`'s dataset lock.

    A temp file exists only while its writer holds its dataset's lock, so this dataset's are all leftovers, and
    another dataset's are removed only if its lock is free right now: a concurrent writer's file is never touched.
    """
    for dataset, temps in _temp_files(path.parent).items():
        if dataset == path.name:
            _remove_stale(temps)
            continue
        with _dataset_unlocked(path.with_name(dataset)) as free:
            if free:
                _remove_stale(temps)


@contextlib.contextmanager
def _corrupt_file_errors(path: Path) -> Iterator[None]:
    """Turn low-level read failures into an error that says which file is bad and what to do."""
    try:
        yield
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InvalidDataError(
            f"Cannot read candle file {path}: {exc}. Delete it (cracktrader data clear) and download again",
            details={"path": str(path)},
        ) from exc


def _column(table: pa.Table, name: str) -> np.ndarray:
    """A column as numpy, without copying when it is a single null-free chunk."""
    col = table.column(name)
    if col.num_chunks == 1:
        return col.chunk(0).to_numpy(zero_copy_only=False)
    if col.num_chunks == 0:
        return np.empty(0, dtype=np.int64 if name == "timestamp" else np.float64)
    return np.concatenate([chunk.to_numpy(zero_copy_only=False) for chunk in col.chunks])


def _merge(old: Candles, new: Candles) -> Candles:
    """Merge sorted candle sets with new rows winning; only the overlapping stretch is re-sorted."""
    if len(old) == 0:
        return new
    if len(new) == 0:
        return old
    lo = int(np.searchsorted(old.timestamp, new.timestamp[0], side="left"))
    hi = int(np.searchsorted(old.timestamp, new.timestamp[-1], side="right"))
    middle = Candles(*(getattr(old, c)[lo:hi] for c in COLUMNS)).concat(new) if hi > lo else new
    return Candles(*(np.concatenate([getattr(old, c)[:lo], getattr(middle, c), getattr(old, c)[hi:]]) for c in COLUMNS))


def _find_gaps(ts: np.ndarray, tf: Timeframe) -> builtins.list[Interval]:
    """[start, end) runs of missing bars between consecutive stored timestamps."""
    if ts.size < 2:
        return []
    expected = np.array([tf.next(int(t)) for t in ts[:-1]], dtype=np.int64) if tf.is_monthly else ts[:-1] + tf.ms
    idx = np.flatnonzero(ts[1:] > expected)
    return [(int(expected[i]), int(ts[i + 1])) for i in idx]


class CandleStore:
    """Parquet files under `root/<exchange>/<symbol>/<timeframe>.parquet`."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # -- paths ---------------------------------------------------------------------------------------

    def path_for(self, exchange: str, symbol: str, timeframe: str | Timeframe) -> Path:
        """The file that holds one dataset."""
        tf = parse_timeframe(timeframe)
        return self.root / safe_name(exchange) / safe_name(symbol) / (_TF_FILE_NAMES[tf.name] + _SUFFIX)

    # -- reading -------------------------------------------------------------------------------------

    def read(
        self,
        exchange: str,
        symbol: str,
        timeframe: str | Timeframe,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> Candles:
        """Stored candles with start_ms <= timestamp < end_ms; empty when nothing is stored."""
        path = self.path_for(exchange, symbol, timeframe)
        if not path.exists():
            return Candles.empty()
        table = self._read_table(path, start_ms, end_ms)
        candles = Candles(*(_column(table, name) for name in COLUMNS))
        return candles.slice_time(start_ms, end_ms) if start_ms is not None or end_ms is not None else candles

    def coverage(self, exchange: str, symbol: str, timeframe: str | Timeframe) -> builtins.list[Interval]:
        """Merged [start, end) ranges that have been fetched (whether or not they held candles)."""
        path = self.path_for(exchange, symbol, timeframe)
        if not path.exists():
            return []
        return self._read_meta(path)[1]

    def missing_ranges(
        self, exchange: str, symbol: str, timeframe: str | Timeframe, start_ms: int, end_ms: int
    ) -> builtins.list[Interval]:
        """Parts of [start_ms, end_ms) not yet fetched, as [first bar open, end) ranges on the bar grid."""
        tf = parse_timeframe(timeframe)
        raw = subtract_intervals(start_ms, end_ms, self.coverage(exchange, symbol, tf))
        # The bars opening in [a, b) are exactly those in [ceil(a), ceil(b)).
        aligned = [(tf.ceil(a), tf.ceil(b)) for a, b in raw]
        return merge_intervals([r for r in aligned if r[1] > r[0]])

    def timeframes(self, exchange: str, symbol: str) -> builtins.list[str]:
        """The timeframes stored for one exchange/symbol, finest first."""
        folder = self.root / safe_name(exchange) / safe_name(symbol)
        if not folder.is_dir():
            return []
        names = [_TF_FROM_FILE[p.stem] for p in folder.glob(f"*{_SUFFIX}") if p.stem in _TF_FROM_FILE]
        order = {tf: i for i, tf in enumerate(SUPPORTED_TIMEFRAMES)}
        return sorted(names, key=lambda name: order.get(name, 99))

    def last_timestamp(self, exchange: str, symbol: str, timeframe: str | Timeframe) -> int | None:
        """Open time of the last stored bar, from the file's statistics (no data read); None when empty."""
        path = self.path_for(exchange, symbol, timeframe)
        if not path.exists():
            return None
        with _corrupt_file_errors(path):
            meta = pq.ParquetFile(path, memory_map=True).metadata
            if meta.num_rows == 0:
                return None
            stats = meta.row_group(meta.num_row_groups - 1).column(0).statistics
            if stats is not None and stats.has_min_max:
                return int(stats.max)
        ts = _column(self._read_table(path, columns=("timestamp",)), "timestamp")
        return int(ts[-1]) if ts.size else None

    def info(self, exchange: str, symbol: str, timeframe: str | Timeframe) -> DatasetInfo:
        """Summary of one dataset; raises DataUnavailableError when it does not exist."""
        path = self.path_for(exchange, symbol, timeframe)
        if not path.exists():
            tf = parse_timeframe(timeframe)
            raise DataUnavailableError(
                f"No stored candles for {exchange} {symbol} {tf}; download them first",
                details={"exchange": exchange, "symbol": symbol, "timeframe": tf.name},
            )
        return self._info_at(path)

    def list(self) -> builtins.list[DatasetInfo]:
        """Every stored dataset, sorted by exchange, symbol and timeframe."""
        infos = [self._info_at(path) for path in self._dataset_paths()]
        order = {tf: i for i, tf in enumerate(SUPPORTED_TIMEFRAMES)}
        return sorted(infos, key=lambda d: (d.exchange, d.symbol, order.get(d.timeframe, 99)))

    # -- writing -------------------------------------------------------------------------------------

    def write(
        self,
        exchange: str,
        symbol: str,
        timeframe: str | Timeframe,
        candles: Candles,
        covered: Interval | None = None,
    ) -> None:
        """Merge `candles` into the dataset (new rows win) and record `covered` as fetched.

        Without `covered`, the span from the first to the end of the last written bar counts as covered.
        """
        tf = parse_timeframe(timeframe)
        path = self.path_for(exchange, symbol, tf)
        path.parent.mkdir(parents=True, exist_ok=True)
        new_cover: builtins.list[Interval] = []
        if covered is not None:
            new_cover.append((int(covered[0]), int(covered[1])))
        elif len(candles):
            new_cover.append((int(candles.timestamp[0]), tf.next(int(candles.timestamp[-1]))))
        with _dataset_lock(path):
            # A killed writer (say, an interrupted `data download`) leaves its temp file: the next write cleans up.
            remove_stale_temp_files(path)
            old_cover: builtins.list[Interval] = []
            # from_columns sorts and de-duplicates; concat makes the new rows win on equal timestamps.
            merged = Candles.from_columns(*(getattr(candles, c) for c in COLUMNS))
            if path.exists():
                old_cover = self._read_meta(path)[1]
                old = self.read(exchange, symbol, tf)
                merged = _merge(old, merged)
            meta = {
                "exchange": exchange,
                "symbol": symbol,
                "timeframe": tf.name,
                "coverage": json.dumps(merge_intervals(old_cover + new_cover)),
                "format_version": _FORMAT_VERSION,
            }
            self._write_atomic(path, merged, meta)

    def clear(self, exchange: str | None = None, symbol: str | None = None, timeframe: str | None = None) -> int:
        """Delete matching datasets (all when no filter is given); returns how many were removed."""
        tf_file = _TF_FILE_NAMES[parse_timeframe(timeframe).name] + _SUFFIX if timeframe else None
        removed = 0
        for path in self._dataset_paths():
            if exchange is not None and path.parent.parent.name != safe_name(exchange):
                continue
            if symbol is not None and path.parent.name != safe_name(symbol):
                continue
            if tf_file is not None and path.name != tf_file:
                continue
            path.unlink(missing_ok=True)
            path.with_name("." + path.name + ".lock").unlink(missing_ok=True)
            removed += 1
            self._remove_empty_dirs(path.parent)
        return removed

    # -- internals -----------------------------------------------------------------------------------

    def _dataset_paths(self) -> builtins.list[Path]:
        if not self.root.exists():
            return []
        return sorted(p for p in self.root.glob(f"*/*/*{_SUFFIX}") if p.stem in _TF_FROM_FILE and p.is_file())

    def _remove_empty_dirs(self, directory: Path) -> None:
        for d in (directory, directory.parent):
            if d == self.root or not d.exists():
                return
            # Hidden files are this store's lock files and temp files left by a killed process.
            if any(not p.name.startswith(".") for p in d.iterdir()):
                return
            for leftover in d.iterdir():
                leftover.unlink(missing_ok=True)
            d.rmdir()

    def _read_table(
        self,
        path: Path,
        start_ms: int | None = None,
        end_ms: int | None = None,
        columns: tuple[str, ...] = COLUMNS,
    ) -> pa.Table:
        with _corrupt_file_errors(path):
            pf = pq.ParquetFile(path, memory_map=True)
            groups = self._row_groups_for(pf, start_ms, end_ms)
            if groups is None:
                return pf.read(columns=list(columns))
            return pf.read_row_groups(groups, columns=list(columns))

    @staticmethod
    def _row_groups_for(pf: pq.ParquetFile, start_ms: int | None, end_ms: int | None) -> builtins.list[int] | None:
        """Row groups that may hold rows in [start_ms, end_ms); None means read them all."""
        meta = pf.metadata
        if (start_ms is None and end_ms is None) or meta.num_row_groups <= 1:
            return None
        wanted: builtins.list[int] = []
        for i in range(meta.num_row_groups):
            stats = meta.row_group(i).column(0).statistics
            if stats is None or not stats.has_min_max:
                return None
            if (end_ms is None or stats.min < end_ms) and (start_ms is None or stats.max >= start_ms):
                wanted.append(i)
        return None if len(wanted) == meta.num_row_groups else wanted

    @staticmethod
    def _read_meta(path: Path) -> tuple[dict[str, str], builtins.list[Interval]]:
        with _corrupt_file_errors(path):
            raw = pq.read_schema(path).metadata or {}
            meta = {k[len(_META_PREFIX) :].decode(): v.decode() for k, v in raw.items() if k.startswith(_META_PREFIX)}
            coverage = [(int(a), int(b)) for a, b in json.loads(meta.get("coverage", "[]"))]
        return meta, coverage

    def _info_at(self, path: Path) -> DatasetInfo:
        meta, coverage = self._read_meta(path)
        tf = parse_timeframe(meta.get("timeframe") or _TF_FROM_FILE[path.stem])
        ts = _column(self._read_table(path, columns=("timestamp",)), "timestamp")
        return DatasetInfo(
            exchange=meta.get("exchange", path.parent.parent.name),
            symbol=meta.get("symbol", path.parent.name),
            timeframe=tf.name,
            first=int(ts[0]) if ts.size else None,
            last=int(ts[-1]) if ts.size else None,
            count=int(ts.size),
            gaps=_find_gaps(ts, tf),
            path=path,
            size_bytes=path.stat().st_size,
            coverage=coverage,
        )

    @staticmethod
    def _write_atomic(path: Path, candles: Candles, meta: dict[str, str]) -> None:
        """Write to a temp file in the same folder, fsync it, then rename over the old file."""
        schema = _SCHEMA.with_metadata({_META_PREFIX + k.encode(): v.encode() for k, v in meta.items()})
        table = pa.Table.from_arrays([pa.array(getattr(candles, c)) for c in COLUMNS], schema=schema)
        fd, tmp_name = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                pq.write_table(
                    table,
                    handle,
                    compression="lz4",
                    use_dictionary=False,
                    column_encoding={"timestamp": "DELTA_BINARY_PACKED"},
                    row_group_size=_ROW_GROUP_SIZE,
                )
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
