"""The single entry point the engine, CLI and API use to get candles: store first, exchange for the rest."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cracktrader.data.candles import Candles, ms_to_iso
from cracktrader.data.csv_io import read_csv, write_csv
from cracktrader.data.resample import bucket_starts, can_resample, resample
from cracktrader.data.sources.base import CandleSource, ProgressCallback
from cracktrader.data.sources.synthetic import SyntheticSource
from cracktrader.data.store import CandleStore, DatasetInfo
from cracktrader.data.timeframes import Timeframe, parse_timeframe
from cracktrader.errors import (
    DataUnavailableError,
    InvalidDataError,
    InvalidDateRangeError,
    InvalidTimeframeError,
    UnknownExchangeError,
    UserInputError,
)
from cracktrader.settings import Settings, get_settings

SYNTHETIC = "synthetic"
# Write to the store every this many bars, so an interrupted long download keeps what it fetched.
FETCH_CHUNK_BARS = 100_000
# Exchanges publish a closed bar with some delay: a recent empty stretch is not recorded as fetched.
SETTLE_MS = 10 * 60_000


def _now_ms() -> int:
    return int(time.time() * 1000)


def _norm_exchange(exchange_id: str) -> str:
    return exchange_id.strip().lower()


def open_store(settings: Settings | None = None) -> CandleStore:
    """The candle store under `<data_dir>/candles`."""
    return CandleStore((settings or get_settings()).data_dir / "candles")


def get_source(exchange_id: str, settings: Settings | None = None) -> CandleSource:
    """The synthetic exchange, or a ccxt-backed source for any other exchange id."""
    exchange = _norm_exchange(exchange_id)
    if exchange == SYNTHETIC:
        return SyntheticSource()
    # Imported lazily: ccxt is slow to import and only needed for real exchanges.
    from cracktrader.data.sources.ccxt_source import CcxtSource

    settings = settings or get_settings()
    return CcxtSource(
        exchange, settings, max_retries=settings.ccxt_max_retries, backoff_base=settings.ccxt_backoff_base
    )


def check_symbols(exchange_id: str, symbols: list[str], *, settings: Settings | None = None) -> None:
    """Raise for an unknown exchange or symbol; an unreachable exchange is not an error here."""
    exchange = _norm_exchange(exchange_id)
    try:
        source = get_source(exchange, settings)
    except UnknownExchangeError as exc:
        store = open_store(settings)
        missing = [s for s in symbols if not store.timeframes(exchange, s)]
        if not missing:
            return  # a local-only dataset such as a CSV import
        here = sorted({i.symbol for i in store.list() if i.exchange == exchange})
        how = f"`cracktrader data import FILE.csv --exchange {exchange} --symbol {missing[0]} --timeframe TF`"
        if not here:
            raise UnknownExchangeError(
                f"{exc.message} To backtest your own candles under this name, import them first: {how}",
                details=exc.details,
            ) from exc
        raise DataUnavailableError(
            f"Nothing is stored for {', '.join(missing)} on {exchange!r}, which is not an exchange to download "
            f"from (stored under it: {', '.join(here)}). Import candles with {how}",
            details={"exchange": exchange, "missing_symbols": missing, "stored_symbols": here},
        ) from exc
    try:
        if hasattr(source, "max_retries"):
            source.max_retries = 0  # a quick check: the run itself retries
        for symbol in symbols:
            try:
                source.validate_symbol(symbol)
            except DataUnavailableError:
                return  # unreachable: let the run use stored candles or explain how to work offline
    finally:
        source.close()


def exchange_fee_rates(exchange_id: str, symbol: str, settings: Settings | None = None) -> tuple[float, float] | None:
    """(maker, taker) the exchange publishes, without any network call; None when unknown."""
    exchange = _norm_exchange(exchange_id)
    if exchange == SYNTHETIC:
        return None
    try:
        source = get_source(exchange, settings)
    except UnknownExchangeError:
        return None  # e.g. data imported from CSV under a name of the user's choosing
    try:
        return source.fee_rates(symbol)
    finally:
        source.close()


def _check_range(start_ms: int, end_ms: int) -> None:
    if int(start_ms) >= int(end_ms):
        raise InvalidDateRangeError(
            f"Start ({ms_to_iso(int(start_ms))}) must be before end ({ms_to_iso(int(end_ms))})",
            details={"start_ms": int(start_ms), "end_ms": int(end_ms)},
        )


def _unavailable(exchange: str, symbol: str, tf: Timeframe, start_ms: int, end_ms: int) -> DataUnavailableError:
    hint = ""
    if start_ms >= tf.floor(_now_ms()):
        hint = " (the range is in the future: only closed bars exist)"
    elif exchange == SYNTHETIC:
        hint = " (synthetic data starts on 2015-01-01)"
    return DataUnavailableError(
        f"No {tf} candles for {symbol} on {exchange} between {ms_to_iso(start_ms)} and {ms_to_iso(end_ms)}" + hint,
        details={
            "exchange": exchange,
            "symbol": symbol,
            "timeframe": tf.name,
            "start": ms_to_iso(start_ms),
            "end": ms_to_iso(end_ms),
        },
    )


def _chunks(tf: Timeframe, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """Split [start_ms, end_ms) on the bar grid into pieces of at most FETCH_CHUNK_BARS bars."""
    if tf.is_monthly:
        return [(start_ms, end_ms)]
    step = FETCH_CHUNK_BARS * tf.ms
    return [(a, min(a + step, end_ms)) for a in range(start_ms, end_ms, step)]


def _fetchable_ranges(
    store: CandleStore, exchange: str, symbol: str, tf: Timeframe, start_ms: int, end_ms: int
) -> list[tuple[int, int]]:
    """Missing ranges, cut at the bar that is still forming (it cannot be stored yet)."""
    limit = tf.floor(_now_ms())
    ranges = store.missing_ranges(exchange, symbol, tf, start_ms, end_ms)
    return [(a, min(b, limit)) for a, b in ranges if a < limit]


def _covered_end(tf: Timeframe, chunk: tuple[int, int], candles: Candles) -> int:
    """How far a fetched chunk counts as fetched: recent empty bars may just not be published yet."""
    settled = tf.floor(_now_ms() - SETTLE_MS)
    last_end = tf.next(int(candles.timestamp[-1])) if len(candles) else chunk[0]
    return min(chunk[1], max(settled, last_end, chunk[0]))


def _fetch_into_store(
    store: CandleStore,
    source: CandleSource,
    exchange: str,
    symbol: str,
    tf: Timeframe,
    ranges: list[tuple[int, int]],
    progress: ProgressCallback | None,
) -> None:
    """Fetch each range chunk by chunk, writing every chunk (with its coverage) as it arrives."""
    total = sum(tf.count(a, b) for a, b in ranges)
    done = 0
    for a, b in ranges:
        for chunk in _chunks(tf, a, b):
            base = done

            def chunk_progress(n: int, _expected: int, base: int = base) -> None:
                if progress is not None:
                    progress(min(base + n, total), total)

            candles = source.fetch(symbol, tf, chunk[0], chunk[1], chunk_progress).slice_time(*chunk)
            store.write(exchange, symbol, tf, candles, covered=(chunk[0], _covered_end(tf, chunk, candles)))
            done += tf.count(*chunk)
            if progress is not None:
                progress(done, total)


def _sync(
    exchange: str,
    symbol: str,
    tf: Timeframe,
    start_ms: int,
    end_ms: int,
    store: CandleStore,
    source: CandleSource | None,
    progress: ProgressCallback | None,
    settings: Settings | None,
) -> None:
    """Bring the store up to date for the range; the source is only opened when something is missing."""
    ranges = _fetchable_ranges(store, exchange, symbol, tf, start_ms, end_ms)
    if not ranges:
        return
    own = source is None
    try:
        src = source if source is not None else get_source(exchange, settings)
    except UnknownExchangeError:
        # A name that is no exchange (e.g. `csv` for imported files) is local-only: use what is stored.
        if store.coverage(exchange, symbol, tf.name):
            return
        raise
    try:
        src.validate_symbol(symbol)
        _fetch_into_store(store, src, exchange, symbol, tf, ranges, progress)
    finally:
        if own:
            src.close()


def load_candles(
    exchange_id: str,
    symbol: str,
    timeframe: str | Timeframe,
    start_ms: int,
    end_ms: int,
    *,
    store: CandleStore | None = None,
    source: CandleSource | None = None,
    progress: ProgressCallback | None = None,
    settings: Settings | None = None,
) -> Candles:
    """Candles opening in [start_ms, end_ms): generated for `synthetic`, else store plus exchange.

    Only ranges the store has not fetched before are downloaded. Raises DataUnavailableError when
    the result would be empty.
    """
    exchange = _norm_exchange(exchange_id)
    tf = parse_timeframe(timeframe)
    start_ms, end_ms = int(start_ms), int(end_ms)
    _check_range(start_ms, end_ms)
    if exchange == SYNTHETIC:
        src = source or SyntheticSource()
        src.validate_symbol(symbol)
        candles = src.fetch(symbol, tf, start_ms, end_ms, progress)
    else:
        store = store or open_store(settings)
        _sync(exchange, symbol, tf, start_ms, end_ms, store, source, progress, settings)
        candles = store.read(exchange, symbol, tf, start_ms, end_ms)
    if len(candles) == 0:
        raise _unavailable(exchange, symbol, tf, start_ms, end_ms)
    return candles


@dataclass(frozen=True, slots=True)
class LoadedCandles:
    """A run's candles for one symbol, and the stored timeframe they were resampled from (None if not)."""

    candles: Candles
    resampled_from: str | None = None


def finer_stored_timeframes(store: CandleStore, exchange: str, symbol: str, tf: Timeframe) -> list[Timeframe]:
    """Stored timeframes finer than `tf` whose bars tile it, finest first."""
    out = []
    for name in store.timeframes(exchange, symbol):
        src = parse_timeframe(name)
        if src != tf and not src.is_monthly and can_resample(src, tf):
            out.append(src)
    return out


def _resampled(
    store: CandleStore, exchange: str, symbol: str, src: Timeframe, tf: Timeframe, start: int, end: int
) -> Candles:
    """Stored `src` candles as whole `tf` bars opening in [start, end); partial first and last bars are dropped."""
    part = store.read(exchange, symbol, src, tf.ceil(start), end)
    if len(part) == 0:
        return part
    out = resample(part, src, tf, drop_incomplete=True)
    if len(out) and int(part.timestamp[0]) != int(out.timestamp[0]):
        out = out.slice_time(tf.next(int(out.timestamp[0])), None)  # its first source bar is missing
    return out.slice_time(start, end)


def load_run_candles(
    exchange_id: str,
    symbol: str,
    timeframe: str | Timeframe,
    start_ms: int,
    end_ms: int,
    *,
    source: CandleSource | None = None,
    progress: ProgressCallback | None = None,
    settings: Settings | None = None,
) -> LoadedCandles:
    """`load_candles`, falling back to the finest stored timeframe that tiles `timeframe` (resampled).

    The fallback applies when nothing is stored in that timeframe and it cannot be fetched: a local-only name
    such as `csv`, or an exchange that does not offer the timeframe.
    """
    exchange = _norm_exchange(exchange_id)
    tf = parse_timeframe(timeframe)
    if exchange == SYNTHETIC or source is not None:
        return LoadedCandles(load_candles(exchange, symbol, tf, start_ms, end_ms, source=source, progress=progress))
    start_ms, end_ms = int(start_ms), int(end_ms)
    _check_range(start_ms, end_ms)
    store = open_store(settings)
    problem: UserInputError | None = None
    try:
        _sync(exchange, symbol, tf, start_ms, end_ms, store, None, progress, settings)
    except (UnknownExchangeError, InvalidTimeframeError) as exc:
        problem = exc
    candles = store.read(exchange, symbol, tf, start_ms, end_ms)
    if len(candles):
        return LoadedCandles(candles)
    for src in finer_stored_timeframes(store, exchange, symbol, tf):
        built = _resampled(store, exchange, symbol, src, tf, start_ms, end_ms)
        if len(built):
            return LoadedCandles(built, src.name)
    if isinstance(problem, UnknownExchangeError):
        raise stored_unavailable(store, exchange, symbol, tf, start_ms, end_ms) from problem
    if problem is not None:
        raise problem
    raise _unavailable(exchange, symbol, tf, start_ms, end_ms)


def stored_unavailable(
    store: CandleStore, exchange: str, symbol: str, tf: Timeframe, start_ms: int, end_ms: int
) -> DataUnavailableError:
    """No usable candles for a name that cannot be downloaded from: what is stored, and how to import."""
    stored = []
    for name in store.timeframes(exchange, symbol):
        info = store.info(exchange, symbol, name)
        if info.count and info.first is not None and info.last is not None:
            stored.append(
                {"timeframe": name, "first": ms_to_iso(info.first), "last": ms_to_iso(info.last), "count": info.count}
            )
    if stored:
        have = "; ".join(f"{s['timeframe']} {s['first']} → {s['last']} ({s['count']} bars)" for s in stored)
        what = f"Stored for {exchange} {symbol}: {have}."
    else:
        others = sorted({i.symbol for i in store.list() if i.exchange == exchange and i.count})
        what = f"Nothing is stored for {exchange} {symbol}" + (f" (stored: {', '.join(others)})." if others else ".")
    message = (
        f"No {tf} candles for {symbol} on {exchange} between {ms_to_iso(start_ms)} and {ms_to_iso(end_ms)}, and "
        f"{exchange!r} is not an exchange to download from. {what} A run can use {tf} bars, or a stored finer "
        f"timeframe that divides {tf} (resampled), covering the range. Import candles with `cracktrader data "
        f"import FILE.csv --exchange {exchange} --symbol {symbol} --timeframe {tf}`."
    )
    return DataUnavailableError(
        message,
        details={
            "exchange": exchange,
            "symbol": symbol,
            "timeframe": tf.name,
            "start": ms_to_iso(start_ms),
            "end": ms_to_iso(end_ms),
            "stored": stored,
        },
    )


def stored_range_end(
    exchange_id: str, symbols: list[str], tf: Timeframe, settings: Settings | None = None
) -> int | None:
    """End (exclusive) of the latest whole `tf` bar stored for the symbols, directly or in a finer timeframe.

    None unless every symbol has candles stored that a run could use (then a run without dates ends there).
    """
    exchange = _norm_exchange(exchange_id)
    if exchange == SYNTHETIC:
        return None
    store = open_store(settings)
    ends = []
    for symbol in symbols:
        last = store.last_timestamp(exchange, symbol, tf)
        if last is not None:
            ends.append(tf.next(last))
            continue
        for src in finer_stored_timeframes(store, exchange, symbol, tf):
            last = store.last_timestamp(exchange, symbol, src)
            if last is not None:
                ends.append(tf.floor(src.next(last)))
                break
        else:
            return None
    return max(ends) if ends else None


def download(
    exchange_id: str,
    symbol: str,
    timeframe: str | Timeframe,
    start_ms: int,
    end_ms: int,
    *,
    store: CandleStore | None = None,
    source: CandleSource | None = None,
    progress: ProgressCallback | None = None,
    settings: Settings | None = None,
) -> DatasetInfo:
    """Fetch what the store lacks for the range (synthetic candles too) and describe the stored dataset."""
    exchange = _norm_exchange(exchange_id)
    tf = parse_timeframe(timeframe)
    start_ms, end_ms = int(start_ms), int(end_ms)
    _check_range(start_ms, end_ms)
    store = store or open_store(settings)
    _sync(exchange, symbol, tf, start_ms, end_ms, store, source, progress, settings)
    if len(store.read(exchange, symbol, tf, start_ms, end_ms)) == 0:
        raise _unavailable(exchange, symbol, tf, start_ms, end_ms)
    return store.info(exchange, symbol, tf)


def import_csv(
    path: str | Path,
    exchange: str,
    symbol: str,
    timeframe: str | Timeframe,
    store: CandleStore | None = None,
    *,
    settings: Settings | None = None,
) -> DatasetInfo:
    """Load a CSV into the store as exchange/symbol/timeframe; its span counts as fetched."""
    exchange = _norm_exchange(exchange)
    tf = parse_timeframe(timeframe)
    if exchange == SYNTHETIC:
        raise UserInputError(
            "The synthetic exchange generates its own candles; import under another exchange name",
            details={"exchange": exchange},
        )
    candles = read_csv(path)
    if len(candles) == 0:
        raise InvalidDataError(f"{path}: the file has a header but no candles", details={"path": str(path)})
    misaligned = np.flatnonzero(bucket_starts(candles.timestamp, tf) != candles.timestamp)
    if misaligned.size:
        ts = int(candles.timestamp[misaligned[0]])
        raise InvalidDataError(
            f"{path}: timestamp {ms_to_iso(ts)} is not the open time of a {tf} bar; "
            f"check the timeframe (bars must open on the {tf} grid)",
            details={"path": str(path), "timeframe": tf.name, "timestamp": ts},
        )
    store = store or open_store(settings)
    store.write(exchange, symbol, tf, candles)
    return store.info(exchange, symbol, tf)


def export_csv(
    path: str | Path,
    exchange: str,
    symbol: str,
    timeframe: str | Timeframe,
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    store: CandleStore | None = None,
    iso: bool = False,
    settings: Settings | None = None,
) -> int:
    """Write stored candles (or, for `synthetic` with both bounds, generated ones) to CSV; returns rows."""
    exchange = _norm_exchange(exchange)
    tf = parse_timeframe(timeframe)
    if exchange == SYNTHETIC and start_ms is not None and end_ms is not None:
        candles = load_candles(exchange, symbol, tf, start_ms, end_ms, settings=settings)
    else:
        candles = (store or open_store(settings)).read(exchange, symbol, tf, start_ms, end_ms)
    if len(candles) == 0:
        raise DataUnavailableError(
            f"No stored {tf} candles for {symbol} on {exchange} to export; download them first",
            details={"exchange": exchange, "symbol": symbol, "timeframe": tf.name},
        )
    write_csv(candles, path, iso=iso)
    return len(candles)
