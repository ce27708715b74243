"""Read and write candles as CSV (`timestamp,open,high,low,close,volume`) with pyarrow."""

from __future__ import annotations

import io
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from cracktrader.data.candles import COLUMNS, PRICE_COLUMNS, Candles
from cracktrader.errors import InvalidDataError

_NUMBER_RE = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"
_INTEGER_RE = r"^\d+$"
_ZONE_RE = r"([Zz]|[+-]\d\d:?\d\d)$"
# Epoch milliseconds below this are before 1973: almost certainly epoch seconds by mistake.
_MIN_EPOCH_MS = 100_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ACCEPTED = (
    "Expected a header with columns timestamp,open,high,low,close,volume (any order, any case); "
    "timestamp as epoch milliseconds or ISO 8601 (e.g. 2024-01-01T00:00:00Z; no offset means UTC)"
)


def _fail(message: str, path: Path, line: int | None = None, **details: object) -> InvalidDataError:
    where = f"{path}, line {line}" if line is not None else str(path)
    return InvalidDataError(
        f"{where}: {message}", details={"path": str(path), "line": line, "accepted": _ACCEPTED, **details}
    )


def _header(path: Path) -> list[str]:
    """The column names exactly as pyarrow will see them (quotes removed, BOM skipped)."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline()
    except FileNotFoundError as exc:
        raise _fail("file not found", path) from exc
    except OSError as exc:
        raise _fail(f"cannot read file ({exc})", path) from exc
    if not first.strip():
        return []
    try:
        return list(pacsv.read_csv(io.BytesIO(first)).column_names)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise _fail(f"cannot parse the header line ({exc})", path, line=1) from exc


def _column_map(path: Path) -> dict[str, str]:
    """Map each required column to its name in the file, matching case-insensitively."""
    found = _header(path)
    lookup = {name.strip().lower(): name for name in found if name.strip()}
    missing = [c for c in COLUMNS if c not in lookup]
    if missing:
        raise _fail(
            f"missing column(s) {', '.join(missing)}; found {', '.join(found) or 'nothing'}. {_ACCEPTED}",
            path,
            line=1,
            missing_columns=missing,
            found_columns=found,
        )
    return {c: lookup[c] for c in COLUMNS}


def _read_table(path: Path, names: dict[str, str]) -> pa.Table:
    """All required columns as strings; blank lines are kept as rows so row i is line i + 2."""
    bad_rows: list[pacsv.InvalidRow] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        bad_rows.append(row)
        return "skip"

    try:
        table = pacsv.read_csv(
            path,
            # Single-threaded so that the invalid-row handler is told the line number.
            read_options=pacsv.ReadOptions(use_threads=False, encoding="utf8"),
            parse_options=pacsv.ParseOptions(ignore_empty_lines=False, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                include_columns=list(names.values()),
                column_types={name: pa.string() for name in names.values()},
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise _fail(f"cannot parse CSV ({exc})", path) from exc
    real_bad = [r for r in bad_rows if r.text.strip()]
    if real_bad:
        row = real_bad[0]
        raise _fail(
            f"expected {row.expected_columns} fields but found {row.actual_columns}: {row.text!r}",
            path,
            line=row.number,
        )
    return table.rename_columns(list(COLUMNS))  # include_columns keeps the order asked for


def _strings(table: pa.Table, column: str) -> pa.Array:
    return pc.utf8_trim_whitespace(table.column(column).combine_chunks().fill_null(""))


def _numbers(values: pa.Array, column: str, lines: np.ndarray, path: Path) -> np.ndarray:
    """Parse a numeric column, naming the first line that is not a number."""
    try:
        return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        ok = pc.match_substring_regex(values, _NUMBER_RE).to_numpy(zero_copy_only=False)
        if ok.all():
            raise _fail(f"{column} has a value that is not a number", path, column=column) from None
        i = int(np.argmin(ok))
        raise _fail(
            f"{column} value {values[i].as_py()!r} is not a number", path, line=int(lines[i]), column=column
        ) from None


def _timestamps(values: pa.Array, lines: np.ndarray, path: Path) -> np.ndarray:
    """Epoch milliseconds or ISO 8601 (offset-less means UTC) to int64 milliseconds."""
    if len(values) and pc.all(pc.match_substring_regex(values, _INTEGER_RE)).as_py():
        ts = pc.cast(values, pa.int64()).to_numpy(zero_copy_only=False)
        small = np.flatnonzero(ts < _MIN_EPOCH_MS)
        if small.size:
            i = int(small[0])
            raise _fail(
                f"timestamp {int(ts[i])} looks like epoch seconds; use epoch milliseconds or ISO 8601",
                path,
                line=int(lines[i]),
            )
        return ts
    try:
        return _iso_fast(values)
    except pa.ArrowInvalid:
        return _iso_slow(values, lines, path)


def _iso_fast(values: pa.Array) -> np.ndarray:
    """Vectorised ISO parsing by Arrow, split by whether a row carries a UTC offset."""
    zoned = pc.match_substring_regex(values, _ZONE_RE).to_numpy(zero_copy_only=False)
    out = np.empty(len(values), dtype=np.int64)
    for mask, unit in ((zoned, pa.timestamp("us", tz="UTC")), (~zoned, pa.timestamp("us"))):
        if mask.any():
            parsed = pc.cast(values.filter(pa.array(mask)), unit).cast(pa.int64())
            out[mask] = parsed.to_numpy(zero_copy_only=False) // 1000
    return out


def _iso_slow(values: pa.Array, lines: np.ndarray, path: Path) -> np.ndarray:
    """Python's ISO parser for forms Arrow rejects, naming the first line neither can read."""
    out = np.empty(len(values), dtype=np.int64)
    for i, text in enumerate(values.to_pylist()):
        try:
            if not text or text.lstrip("-").isdigit():
                raise ValueError(text)
            dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            dt = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
            out[i] = (dt - _EPOCH) // timedelta(milliseconds=1)
        except ValueError:
            raise _fail(
                f"timestamp {text!r} is neither epoch milliseconds nor ISO 8601", path, line=int(lines[i])
            ) from None
    return out


def _check_values(cols: dict[str, np.ndarray], lines: np.ndarray, path: Path) -> None:
    """Positive finite prices, non-negative volume, and high/low bracketing open/close."""
    for name in PRICE_COLUMNS[:-1]:
        bad = np.flatnonzero(~np.isfinite(cols[name]) | (cols[name] <= 0))
        if bad.size:
            i = int(bad[0])
            raise _fail(f"{name} is {cols[name][i]}; prices must be positive numbers", path, line=int(lines[i]))
    vol = cols["volume"]
    bad = np.flatnonzero(~np.isfinite(vol) | (vol < 0))
    if bad.size:
        i = int(bad[0])
        raise _fail(f"volume is {vol[i]}; volume must be zero or more", path, line=int(lines[i]))
    top = np.maximum(cols["open"], cols["close"])
    bottom = np.minimum(cols["open"], cols["close"])
    bad = np.flatnonzero((cols["high"] < top) | (cols["low"] > bottom))
    if bad.size:
        i = int(bad[0])
        o, h, lo, c = (cols[k][i] for k in ("open", "high", "low", "close"))
        raise _fail(
            f"high/low do not bracket open/close (open={o}, high={h}, low={lo}, close={c}); "
            "high must be >= max(open, close) and low <= min(open, close)",
            path,
            line=int(lines[i]),
        )


def read_csv(path: str | Path) -> Candles:
    """Load candles from CSV, raising InvalidDataError that names the line and what is accepted."""
    path = Path(path)
    table = _read_table(path, _column_map(path))
    raw = {c: _strings(table, c) for c in COLUMNS}
    blank = np.ones(table.num_rows, dtype=bool)
    for values in raw.values():
        blank &= pc.equal(values, "").to_numpy(zero_copy_only=False)
    lines = np.flatnonzero(~blank) + 2  # header is line 1
    keep = pa.array(~blank)
    raw = {c: v.filter(keep) for c, v in raw.items()}
    cols = {c: _numbers(raw[c], c, lines, path) for c in PRICE_COLUMNS}
    ts = _timestamps(raw["timestamp"], lines, path)
    _check_values(cols, lines, path)
    return Candles.from_columns(ts, *(cols[c] for c in PRICE_COLUMNS))


def _iso_strings(ts: np.ndarray) -> pa.Array:
    """ISO 8601 UTC strings with a Z suffix, with milliseconds only when some timestamp needs them."""
    dates: np.ndarray = ts.astype("datetime64[ms]")
    if np.any(ts % 1000):
        return pa.array(np.datetime_as_string(dates, unit="ms", timezone="UTC"))
    return pa.array(np.datetime_as_string(dates, unit="s", timezone="UTC"))


def write_csv(candles: Candles, path: str | Path, iso: bool = False) -> None:
    """Write candles as CSV (timestamps as epoch ms, or ISO 8601 UTC with `iso`), replacing atomically."""
    path = Path(path)
    stamp = _iso_strings(candles.timestamp) if iso else pa.array(candles.timestamp, type=pa.int64())
    table = pa.table([stamp, *(pa.array(getattr(candles, c)) for c in PRICE_COLUMNS)], names=list(COLUMNS))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            # Arrow quotes header names; a plain header is friendlier to other tools.
            handle.write((",".join(COLUMNS) + "\n").encode())
            options = pacsv.WriteOptions(include_header=False, quoting_style="none")
            pacsv.write_csv(table, handle, write_options=options)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
