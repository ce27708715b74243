"""CSV import/export: round trips, accepted timestamp forms and clear error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cracktrader.data.candles import COLUMNS, Candles
from cracktrader.data.csv_io import read_csv, write_csv
from cracktrader.data.sources.synthetic import SyntheticSource
from cracktrader.errors import InvalidDataError

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
HEADER = "timestamp,open,high,low,close,volume\n"


def write(tmp_path: Path, text: str, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def same(a: Candles, b: Candles) -> bool:
    return all(np.array_equal(getattr(a, c), getattr(b, c)) for c in COLUMNS)


def test_reads_hand_written_candles(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + f"{T0},100.5,101,99.25,100,12.5\n{T0 + 60_000},100,100.75,99.5,100.25,0\n")
    c = read_csv(path)
    assert c.timestamp.tolist() == [T0, T0 + 60_000]
    assert c.open.tolist() == [100.5, 100.0]
    assert c.high.tolist() == [101.0, 100.75]
    assert c.low.tolist() == [99.25, 99.5]
    assert c.close.tolist() == [100.0, 100.25]
    assert c.volume.tolist() == [12.5, 0.0]


@pytest.mark.parametrize("iso", [False, True])
def test_round_trip_keeps_every_value_exactly(tmp_path: Path, iso: bool) -> None:
    candles = SyntheticSource(now_ms=T0 + 86_400_000).fetch("ETH/USDT", "1m", T0, T0 + 3_600_000)
    write_csv(candles, tmp_path / "out.csv", iso=iso)
    assert same(read_csv(tmp_path / "out.csv"), candles)


def test_iso_export_writes_utc_with_z_and_a_plain_header(tmp_path: Path) -> None:
    candles = Candles.from_rows([[T0, 1, 2, 0.5, 1.5, 3], [T0 + 1_500, 1, 2, 0.5, 1.5, 3]])
    write_csv(candles, tmp_path / "out.csv", iso=True)
    assert (tmp_path / "out.csv").read_text().splitlines() == [
        "timestamp,open,high,low,close,volume",
        "2024-01-01T00:00:00.000Z,1,2,0.5,1.5,3",
        "2024-01-01T00:00:01.500Z,1,2,0.5,1.5,3",
    ]
    assert read_csv(tmp_path / "out.csv").timestamp.tolist() == [T0, T0 + 1_500]


def test_ms_export_writes_epoch_milliseconds(tmp_path: Path) -> None:
    write_csv(Candles.from_rows([[T0, 1, 2, 0.5, 1.5, 3]]), tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text().splitlines()[1] == f"{T0},1,2,0.5,1.5,3"


@pytest.mark.parametrize(
    "stamp",
    [
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00",
        "2024-01-01 00:00:00",
        "2024-01-01",
        "2024-01-01T01:00:00+01:00",
        "2023-12-31T19:00:00-0500",
        "2024-01-01T00:00:00.000Z",
    ],
)
def test_iso_timestamps_in_any_common_form_mean_the_same_instant(tmp_path: Path, stamp: str) -> None:
    assert read_csv(write(tmp_path, HEADER + f"{stamp},1,2,0.5,1.5,3\n")).timestamp.tolist() == [T0]


def test_header_is_case_insensitive_in_any_order_and_extra_columns_are_ignored(tmp_path: Path) -> None:
    text = "Volume, Close ,LOW,High,Open,Timestamp,note\n7,1.5,0.5,2,1,2024-01-01T00:00:00Z,hello\n"
    c = read_csv(write(tmp_path, text))
    assert (c.timestamp[0], c.open[0], c.high[0], c.low[0], c.close[0], c.volume[0]) == (
        T0,
        1,
        2,
        0.5,
        1.5,
        7,
    )


def test_unsorted_rows_are_sorted_and_a_repeated_timestamp_keeps_the_later_row(tmp_path: Path) -> None:
    text = HEADER + f"{T0 + 60_000},1,2,0.5,1.5,3\n{T0},1,2,0.5,1.5,3\n{T0 + 60_000},1,2,0.5,1.25,9\n"
    c = read_csv(write(tmp_path, text))
    assert c.timestamp.tolist() == [T0, T0 + 60_000]
    assert c.close.tolist() == [1.5, 1.25]


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    c = read_csv(write(tmp_path, HEADER + f"{T0},1,2,0.5,1.5,3\n\n{T0 + 60_000},1,2,0.5,1.5,3\n\n"))
    assert len(c) == 2


def test_missing_column_is_named_with_what_is_accepted(tmp_path: Path) -> None:
    with pytest.raises(InvalidDataError) as info:
        read_csv(write(tmp_path, "timestamp,open,high,low,close\n1,1,1,1,1\n"))
    assert "missing column(s) volume" in info.value.message
    assert "timestamp,open,high,low,close,volume" in info.value.message
    assert info.value.details["missing_columns"] == ["volume"]


def test_unparsable_number_names_the_line_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + f"{T0},1,2,0.5,1.5,3\n\n{T0 + 60_000},1,abc,0.5,1.5,3\n")
    with pytest.raises(InvalidDataError) as info:
        read_csv(path)
    assert info.value.message == f"{path}, line 4: high value 'abc' is not a number"
    assert info.value.details["line"] == 4


def test_row_with_wrong_number_of_fields_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidDataError, match=r"line 3: expected 6 fields but found 3"):
        read_csv(write(tmp_path, HEADER + f"{T0},1,2,0.5,1.5,3\n{T0},1,2\n"))


def test_unparsable_timestamp_names_the_line(tmp_path: Path) -> None:
    text = HEADER + "2024-01-01T00:00:00Z,1,2,0.5,1.5,3\nyesterday,1,2,0.5,1.5,3\n"
    with pytest.raises(InvalidDataError, match=r"line 3: timestamp 'yesterday' is neither epoch milliseconds"):
        read_csv(write(tmp_path, text))


def test_epoch_seconds_are_rejected_with_advice(tmp_path: Path) -> None:
    with pytest.raises(InvalidDataError, match=r"line 2: timestamp 1704067200 looks like epoch seconds"):
        read_csv(write(tmp_path, HEADER + "1704067200,1,2,0.5,1.5,3\n"))


@pytest.mark.parametrize(("row", "column"), [("0,2,0.5,1.5", "open"), ("1,2,0.5,-1.5", "close")])
def test_non_positive_price_names_the_line(tmp_path: Path, row: str, column: str) -> None:
    with pytest.raises(InvalidDataError, match=rf"line 3: {column} is .*prices must be positive"):
        read_csv(write(tmp_path, HEADER + f"{T0},1,2,0.5,1.5,3\n{T0 + 60_000},{row},3\n"))


def test_negative_volume_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidDataError, match=r"line 2: volume is -3.0"):
        read_csv(write(tmp_path, HEADER + f"{T0},1,2,0.5,1.5,-3\n"))


def test_high_and_low_that_do_not_bracket_open_and_close_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidDataError) as info:
        read_csv(write(tmp_path, HEADER + f"{T0},10,9,8,9.5,1\n"))
    assert "line 2: high/low do not bracket open/close (open=10.0, high=9.0, low=8.0, close=9.5)" in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidDataError, match="file not found"):
        read_csv(tmp_path / "nope.csv")


def test_header_only_file_gives_no_candles(tmp_path: Path) -> None:
    assert len(read_csv(write(tmp_path, HEADER))) == 0
