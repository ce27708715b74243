"""The Parquet candle store: round trips, merging, atomic writes, coverage, info, list and clear."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cracktrader.data.candles import Candles
from cracktrader.data.store import STALE_TMP_S, CandleStore, merge_intervals, safe_name, subtract_intervals
from cracktrader.errors import DataUnavailableError, InvalidDataError

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
MIN = 60_000
HOUR = 3_600_000


def bars(start: int, n: int, step: int = MIN, base: float = 100.0) -> Candles:
    """n simple candles whose close is base + index, so values are easy to check by hand."""
    ts = start + np.arange(n, dtype=np.int64) * step
    close = base + np.arange(n, dtype=np.float64)
    return Candles(ts, close - 0.5, close + 1.0, close - 1.0, close, np.full(n, 2.0))


@pytest.fixture
def store(tmp_path: Path) -> CandleStore:
    return CandleStore(tmp_path / "candles")


def test_reading_a_dataset_that_was_never_written_is_empty(store: CandleStore) -> None:
    assert len(store.read("binance", "BTC/USDT", "1m")) == 0


def test_written_candles_read_back_with_exact_values(store: CandleStore) -> None:
    candles = Candles(
        np.array([T0, T0 + MIN, T0 + 2 * MIN]),
        np.array([10.0, 11.0, 12.5]),
        np.array([11.5, 12.0, 13.0]),
        np.array([9.5, 10.5, 12.0]),
        np.array([11.0, 12.5, 12.25]),
        np.array([1.5, 0.0, 3.25]),
    )
    store.write("binance", "BTC/USDT", "1m", candles)
    got = store.read("binance", "BTC/USDT", "1m")
    assert got.timestamp.tolist() == [T0, T0 + MIN, T0 + 2 * MIN]
    assert got.open.tolist() == [10.0, 11.0, 12.5]
    assert got.high.tolist() == [11.5, 12.0, 13.0]
    assert got.low.tolist() == [9.5, 10.5, 12.0]
    assert got.close.tolist() == [11.0, 12.5, 12.25]
    assert got.volume.tolist() == [1.5, 0.0, 3.25]
    assert got.timestamp.dtype == np.int64


def test_read_range_includes_start_and_excludes_end(store: CandleStore) -> None:
    store.write("binance", "BTC/USDT", "1m", bars(T0, 10))
    got = store.read("binance", "BTC/USDT", "1m", T0 + 2 * MIN, T0 + 5 * MIN)
    assert got.timestamp.tolist() == [T0 + 2 * MIN, T0 + 3 * MIN, T0 + 4 * MIN]
    assert got.close.tolist() == [102.0, 103.0, 104.0]


def test_rewriting_a_timestamp_keeps_the_new_row(store: CandleStore) -> None:
    store.write("binance", "BTC/USDT", "1m", bars(T0, 5, base=100.0))
    store.write("binance", "BTC/USDT", "1m", bars(T0 + 3 * MIN, 4, base=500.0))
    got = store.read("binance", "BTC/USDT", "1m")
    assert got.timestamp.tolist() == [T0 + i * MIN for i in range(7)]
    assert got.close.tolist() == [100.0, 101.0, 102.0, 500.0, 501.0, 502.0, 503.0]


def test_batches_written_out_of_order_are_stored_sorted(store: CandleStore) -> None:
    store.write("binance", "BTC/USDT", "1m", bars(T0 + 10 * MIN, 3, base=10.0))
    store.write("binance", "BTC/USDT", "1m", bars(T0, 2, base=1.0))
    store.write("binance", "BTC/USDT", "1m", bars(T0 + 5 * MIN, 1, base=5.0))
    got = store.read("binance", "BTC/USDT", "1m")
    assert got.timestamp.tolist() == [T0, T0 + MIN, T0 + 5 * MIN, T0 + 10 * MIN, T0 + 11 * MIN, T0 + 12 * MIN]
    assert got.close.tolist() == [1.0, 2.0, 5.0, 10.0, 11.0, 12.0]


def test_new_rows_inside_old_range_replace_only_their_timestamps(store: CandleStore) -> None:
    store.write("binance", "BTC/USDT", "1m", bars(T0, 10, base=0.0))
    patch = Candles.from_rows([[T0 + 4 * MIN, 1, 2, 0.5, 1.5, 9], [T0 + 6 * MIN, 1, 2, 0.5, 1.75, 9]])
    store.write("binance", "BTC/USDT", "1m", patch)
    got = store.read("binance", "BTC/USDT", "1m")
    assert got.close.tolist() == [0.0, 1.0, 2.0, 3.0, 1.5, 5.0, 1.75, 7.0, 8.0, 9.0]


def test_crash_before_rename_keeps_old_data_and_leaves_no_temp_file(
    store: CandleStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.write("binance", "BTC/USDT", "1m", bars(T0, 5))

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        store.write("binance", "BTC/USDT", "1m", bars(T0 + 5 * MIN, 5, base=900.0))
    monkeypatch.undo()
    got = store.read("binance", "BTC/USDT", "1m")
    assert got.close.tolist() == [100.0, 101.0, 102.0, 103.0, 104.0]
    folder = store.path_for("binance", "BTC/USDT", "1m").parent
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) == ["1m.parquet"]


def test_crash_while_syncing_the_temp_file_keeps_old_data(store: CandleStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.write("binance", "BTC/USDT", "1m", bars(T0, 3))
    real_fsync = os.fsync

    def crash(fd: int) -> None:
        real_fsync(fd)
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        store.write("binance", "BTC/USDT", "1m", bars(T0, 3, base=7.0))
    monkeypatch.undo()
    assert store.read("binance", "BTC/USDT", "1m").close.tolist() == [100.0, 101.0, 102.0]
    folder = store.path_for("binance", "BTC/USDT", "1m").parent
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


# A writer that holds a dataset's lock and has written part of its temp file, as a `data download` does mid-write.
_WRITER = """
import os, sys, tempfile, time
from pathlib import Path
from cracktrader.data.store import _dataset_lock
path = Path(sys.argv[1])
path.parent.mkdir(parents=True, exist_ok=True)
with _dataset_lock(path):
    fd, name = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    os.write(fd, b"PAR1 half a file")
    print(name, flush=True)
    time.sleep(120)
"""


@contextlib.contextmanager
def _writer_mid_write(path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A process that is writing `path`'s temp file; the test kills it (or it is killed on exit)."""
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc, Path(proc.stdout.readline().strip())
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _temps(folder: Path) -> list[str]:
    return sorted(p.name.split(".")[1] for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_the_next_write_removes_the_temp_file_of_a_killed_writer(store: CandleStore) -> None:
    store.write("binance", "BTC/USDT", "1m", bars(T0, 5))
    path = store.path_for("binance", "BTC/USDT", "1m")
    with _writer_mid_write(path) as (writer, tmp):
        writer.kill()  # like Ctrl-C or SIGKILL during `data download`: the rename never happens
        writer.wait(timeout=30)
    assert tmp.exists() and time.time() - tmp.stat().st_mtime < STALE_TMP_S  # a fresh leftover, not an old one
    store.write("binance", "BTC/USDT", "1m", bars(T0 + 5 * MIN, 5))
    assert not tmp.exists() and _temps(path.parent) == []
    assert store.read("binance", "BTC/USDT", "1m").close.tolist() == [100.0 + i for i in range(5)] * 2


def test_a_temp_file_another_process_is_still_writing_is_kept(store: CandleStore) -> None:
    minute = store.path_for("binance", "BTC/USDT", "1m")
    hour = store.path_for("binance", "BTC/USDT", "1h")
    with _writer_mid_write(hour) as (_, busy):
        # Beside it: the leftover of a killed 1m writer, and a temp file no cracktrader writer made (no lock file).
        with _writer_mid_write(minute) as (killed, leftover):
            killed.kill()
            killed.wait(timeout=30)
        foreign = minute.with_name(".5m.parquet.abc123.tmp")
        foreign.write_bytes(b"")
        store.write("binance", "BTC/USDT", "1m", bars(T0, 3))
        assert busy.exists() and foreign.exists() and not leftover.exists()
    # Once the 1h writer is gone (killed here), its temp file is a leftover too.
    store.write("binance", "BTC/USDT", "1m", bars(T0, 3))
    assert not busy.exists() and foreign.exists()
    assert len(store.read("binance", "BTC/USDT", "1m")) == 3


def test_symbol_is_stored_under_a_filesystem_safe_name(store: CandleStore) -> None:
    path = store.path_for("binance", "BTC/USDT", "1h")
    assert path == store.root / "binance" / "BTC-USDT" / "1h.parquet"
    assert safe_name("BTC/USDT:USDT") == "BTC-USDT%3AUSDT"
    assert safe_name("A B") == "A%20B"


def test_minute_and_month_timeframes_use_different_files(store: CandleStore) -> None:
    # 1m and 1M would be the same file on case-insensitive file systems.
    assert store.path_for("x", "A/B", "1m").name.lower() != store.path_for("x", "A/B", "1M").name.lower()


def test_missing_ranges_of_an_empty_store_is_the_whole_range_on_the_bar_grid(store: CandleStore) -> None:
    assert store.missing_ranges("binance", "BTC/USDT", "1h", T0 + 1, T0 + 3 * HOUR + 5) == [(T0 + HOUR, T0 + 4 * HOUR)]


def test_missing_ranges_leaves_out_what_was_fetched(store: CandleStore) -> None:
    store.write("binance", "BTC/USDT", "1h", bars(T0 + 2 * HOUR, 3, step=HOUR), covered=(T0 + 2 * HOUR, T0 + 5 * HOUR))
    assert store.missing_ranges("binance", "BTC/USDT", "1h", T0, T0 + 8 * HOUR) == [
        (T0, T0 + 2 * HOUR),
        (T0 + 5 * HOUR, T0 + 8 * HOUR),
    ]
    assert store.missing_ranges("binance", "BTC/USDT", "1h", T0 + 2 * HOUR, T0 + 5 * HOUR) == []


def test_a_fetched_range_without_candles_is_not_missing_again(store: CandleStore) -> None:
    store.write("binance", "NEW/USDT", "1d", Candles.empty(), covered=(T0, T0 + 30 * 86_400_000))
    assert store.missing_ranges("binance", "NEW/USDT", "1d", T0, T0 + 30 * 86_400_000) == []
    assert len(store.read("binance", "NEW/USDT", "1d")) == 0
    assert store.info("binance", "NEW/USDT", "1d").count == 0


def test_writing_without_covered_counts_the_span_of_the_candles(store: CandleStore) -> None:
    store.write("binance", "BTC/USDT", "1m", bars(T0, 10))
    assert store.coverage("binance", "BTC/USDT", "1m") == [(T0, T0 + 10 * MIN)]


def test_touching_coverage_intervals_merge(store: CandleStore) -> None:
    store.write("binance", "BTC/USDT", "1m", Candles.empty(), covered=(T0, T0 + 5 * MIN))
    store.write("binance", "BTC/USDT", "1m", Candles.empty(), covered=(T0 + 10 * MIN, T0 + 20 * MIN))
    store.write("binance", "BTC/USDT", "1m", Candles.empty(), covered=(T0 + 5 * MIN, T0 + 10 * MIN))
    assert store.coverage("binance", "BTC/USDT", "1m") == [(T0, T0 + 20 * MIN)]


def test_info_reports_first_last_count_and_gap_runs(store: CandleStore) -> None:
    ts = [T0, T0 + MIN, T0 + 4 * MIN, T0 + 5 * MIN, T0 + 9 * MIN]
    store.write("binance", "BTC/USDT", "1m", Candles.from_rows([[t, 1, 1, 1, 1, 1] for t in ts]))
    info = store.info("binance", "BTC/USDT", "1m")
    assert (info.exchange, info.symbol, info.timeframe) == ("binance", "BTC/USDT", "1m")
    assert (info.first, info.last, info.count) == (T0, T0 + 9 * MIN, 5)
    assert info.gaps == [(T0 + 2 * MIN, T0 + 4 * MIN), (T0 + 6 * MIN, T0 + 9 * MIN)]
    assert info.path == store.path_for("binance", "BTC/USDT", "1m")
    assert info.size_bytes == info.path.stat().st_size > 0
    assert info.to_dict()["gaps"] == [[T0 + 2 * MIN, T0 + 4 * MIN], [T0 + 6 * MIN, T0 + 9 * MIN]]


def test_monthly_gaps_follow_calendar_months(store: CandleStore) -> None:
    jan, feb, apr = 1_704_067_200_000, 1_706_745_600_000, 1_711_929_600_000  # 2024-01/02/04-01
    mar = 1_709_251_200_000
    store.write("binance", "BTC/USDT", "1M", Candles.from_rows([[t, 1, 1, 1, 1, 1] for t in (jan, feb, apr)]))
    info = store.info("binance", "BTC/USDT", "1M")
    assert info.gaps == [(mar, apr)] and info.missing_bars == 1 and info.largest_gap == (mar, apr, 1)


def test_missing_bars_sum_every_gap_and_the_largest_is_the_earliest_of_equals(store: CandleStore) -> None:
    minutes = [0, 1, 4, 5, 8, 20]  # gaps of 2, 2 and 11 bars, then the same without the last one
    store.write("binance", "BTC/USDT", "1m", Candles.from_rows([[T0 + m * MIN, 1, 1, 1, 1, 1] for m in minutes]))
    info = store.info("binance", "BTC/USDT", "1m")
    assert info.missing_bars == 15 and info.largest_gap == (T0 + 9 * MIN, T0 + 20 * MIN, 11)
    store.write("binance", "ETH/USDT", "1m", Candles.from_rows([[T0 + m * MIN, 1, 1, 1, 1, 1] for m in minutes[:-1]]))
    info = store.info("binance", "ETH/USDT", "1m")
    assert info.missing_bars == 4 and info.largest_gap == (T0 + 2 * MIN, T0 + 4 * MIN, 2)


def test_info_of_a_dataset_that_does_not_exist_raises(store: CandleStore) -> None:
    with pytest.raises(DataUnavailableError, match="binance BTC/USDT 1h"):
        store.info("binance", "BTC/USDT", "1h")


def test_list_returns_every_dataset_with_its_original_symbol(store: CandleStore) -> None:
    store.write("binance", "BTC/USDT", "1h", bars(T0, 3, step=HOUR))
    store.write("binance", "BTC/USDT", "1m", bars(T0, 2))
    store.write("bybit", "BTC/USDT:USDT", "1d", bars(T0, 1, step=86_400_000))
    listed = [(d.exchange, d.symbol, d.timeframe, d.count) for d in store.list()]
    assert listed == [
        ("binance", "BTC/USDT", "1m", 2),
        ("binance", "BTC/USDT", "1h", 3),
        ("bybit", "BTC/USDT:USDT", "1d", 1),
    ]


def test_list_of_an_empty_store_is_empty(store: CandleStore) -> None:
    assert store.list() == []


def test_clear_removes_matching_datasets_and_counts_them(store: CandleStore) -> None:
    for exchange, symbol, tf in [
        ("binance", "BTC/USDT", "1m"),
        ("binance", "BTC/USDT", "1h"),
        ("binance", "ETH/USDT", "1h"),
        ("kraken", "BTC/USDT", "1h"),
    ]:
        store.write(exchange, symbol, tf, bars(T0, 2))
    assert store.clear("binance", "BTC/USDT", "1h") == 1
    assert store.clear(timeframe="1h") == 2
    assert [(d.exchange, d.symbol, d.timeframe) for d in store.list()] == [("binance", "BTC/USDT", "1m")]
    assert store.clear() == 1
    assert store.list() == []
    assert not (store.root / "binance").exists()


def test_a_corrupt_file_raises_a_clear_error(store: CandleStore) -> None:
    path = store.path_for("binance", "BTC/USDT", "1m")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not parquet at all")
    with pytest.raises(InvalidDataError, match="Cannot read candle file"):
        store.read("binance", "BTC/USDT", "1m")


def test_narrow_read_across_row_groups_returns_exact_rows(store: CandleStore) -> None:
    n = 600_000  # spans several row groups
    store.write("binance", "BTC/USDT", "1m", bars(T0, n, base=0.0))
    got = store.read("binance", "BTC/USDT", "1m", T0 + 262_140 * MIN, T0 + 262_150 * MIN)
    assert got.close.tolist() == [float(i) for i in range(262_140, 262_150)]
    assert len(store.read("binance", "BTC/USDT", "1m", T0 - 10 * MIN, T0)) == 0
    assert len(store.read("binance", "BTC/USDT", "1m", T0 + (n - 1) * MIN, None)) == 1


def test_a_million_rows_write_and_read_quickly(store: CandleStore) -> None:
    candles = bars(T0, 1_000_000)
    started = time.perf_counter()
    store.write("binance", "BTC/USDT", "1m", candles)
    write_s = time.perf_counter() - started
    started = time.perf_counter()
    got = store.read("binance", "BTC/USDT", "1m")
    read_s = time.perf_counter() - started
    assert len(got) == 1_000_000
    assert np.array_equal(got.close, candles.close)
    # Generous bounds for slow CI machines; typical figures are ~0.3 s and ~0.05 s.
    assert write_s < 5.0
    assert read_s < 1.0


@given(
    st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100)), max_size=8),
    st.integers(0, 100),
    st.integers(0, 100),
)
def test_subtracting_coverage_leaves_exactly_the_uncovered_points(
    raw: list[tuple[int, int]], start: int, end: int
) -> None:
    covered = merge_intervals([(min(a, b), max(a, b)) for a, b in raw])
    missing = subtract_intervals(start, end, covered)
    for x in range(0, 101):
        in_cover = any(a <= x < b for a, b in covered)
        in_missing = any(a <= x < b for a, b in missing)
        assert in_missing == (start <= x < end and not in_cover)
    assert all(a < b for a, b in missing)
