"""The data service: validation, incremental fetching into the store, synthetic data, CSV import/export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cracktrader.data import service
from cracktrader.data.candles import Candles
from cracktrader.data.csv_io import read_csv, write_csv
from cracktrader.data.sources.base import ProgressCallback
from cracktrader.data.sources.synthetic import SyntheticSource
from cracktrader.data.store import CandleStore
from cracktrader.data.timeframes import Timeframe
from cracktrader.errors import (
    DataUnavailableError,
    ExchangeUnreachableError,
    InvalidDataError,
    InvalidDateRangeError,
    InvalidSymbolError,
    InvalidTimeframeError,
    UserInputError,
)
from cracktrader.settings import get_settings

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
HOUR = 3_600_000
DAY = 86_400_000
NOW = 1_735_689_600_000  # 2025-01-01


class CountingSource:
    """A stub exchange: candles (close = hours since T0) from `listed_from` on; records every fetch."""

    exchange_id = "stubex"

    def __init__(self, listed_from: int = 0, fail_on_call: int | None = None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.listed_from = listed_from
        self.fail_on_call = fail_on_call
        self.closed = False

    def symbols(self) -> list[str]:
        return ["BTC/USDT"]

    def validate_symbol(self, symbol: str) -> None:
        if symbol != "BTC/USDT":
            raise InvalidSymbolError(f"Unknown symbol {symbol}", details={"supported_symbols": ["BTC/USDT"]})

    def fetch(
        self,
        symbol: str,
        timeframe: Timeframe,
        start_ms: int,
        end_ms: int,
        progress: ProgressCallback | None = None,
    ) -> Candles:
        self.calls.append((start_ms, end_ms))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise ExchangeUnreachableError("stub exchange is down")
        ts = timeframe.grid(max(start_ms, self.listed_from), end_ms)
        close = (ts - T0) / HOUR + 1000.0
        if progress is not None:
            progress(len(ts), len(ts))
        return Candles(ts, close, close + 1, close - 1, close, np.ones(len(ts)))

    def fee_rates(self, symbol: str) -> tuple[float, float] | None:
        return None

    def close(self) -> None:
        self.closed = True


class LaggingSource(CountingSource):
    """An exchange that has not yet published bars opening at or after `published_until`."""

    def __init__(self, published_until: int) -> None:
        super().__init__()
        self.published_until = published_until

    def fetch(
        self,
        symbol: str,
        timeframe: Timeframe,
        start_ms: int,
        end_ms: int,
        progress: ProgressCallback | None = None,
    ) -> Candles:
        return super().fetch(symbol, timeframe, start_ms, min(end_ms, self.published_until), progress)


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "_now_ms", lambda: NOW)


@pytest.fixture
def store(tmp_path: Path) -> CandleStore:
    return CandleStore(tmp_path / "candles")


def load(store: CandleStore, source: CountingSource, start: int, end: int, tf: str = "1h") -> Candles:
    return service.load_candles("stubex", "BTC/USDT", tf, start, end, store=store, source=source)


def test_first_load_fetches_the_range_and_returns_exact_candles(store: CandleStore) -> None:
    source = CountingSource()
    c = load(store, source, T0, T0 + 3 * HOUR)
    assert source.calls == [(T0, T0 + 3 * HOUR)]
    assert c.timestamp.tolist() == [T0, T0 + HOUR, T0 + 2 * HOUR]
    assert c.close.tolist() == [1000.0, 1001.0, 1002.0]


def test_second_load_of_same_range_fetches_nothing(store: CandleStore) -> None:
    source = CountingSource()
    first = load(store, source, T0, T0 + DAY)
    second = load(store, source, T0, T0 + DAY)
    assert source.calls == [(T0, T0 + DAY)]
    assert second.close.tolist() == first.close.tolist()


def test_extending_the_range_fetches_only_the_new_part(store: CandleStore) -> None:
    source = CountingSource()
    load(store, source, T0, T0 + DAY)
    c = load(store, source, T0 - 5 * HOUR, T0 + DAY + 2 * HOUR)
    assert source.calls == [(T0, T0 + DAY), (T0 - 5 * HOUR, T0), (T0 + DAY, T0 + DAY + 2 * HOUR)]
    assert len(c) == 24 + 7
    assert c.close[0] == 995.0 and c.close[-1] == 1025.0


def test_unaligned_range_is_fetched_on_the_bar_grid(store: CandleStore) -> None:
    source = CountingSource()
    c = load(store, source, T0 + 1, T0 + 2 * HOUR + 1)
    assert source.calls == [(T0 + HOUR, T0 + 3 * HOUR)]
    assert c.timestamp.tolist() == [T0 + HOUR, T0 + 2 * HOUR]


def test_a_range_where_the_exchange_has_no_candles_is_not_downloaded_again(store: CandleStore) -> None:
    source = CountingSource(listed_from=T0 + 10 * DAY)
    for _ in range(2):
        with pytest.raises(DataUnavailableError):
            load(store, source, T0, T0 + DAY)
    assert source.calls == [(T0, T0 + DAY)]


def test_empty_result_message_names_exchange_symbol_timeframe_and_range(store: CandleStore) -> None:
    with pytest.raises(DataUnavailableError) as info:
        load(store, CountingSource(listed_from=T0 + 10 * DAY), T0, T0 + DAY)
    assert info.value.message == (
        "No 1h candles for BTC/USDT on stubex between 2024-01-01T00:00:00Z and 2024-01-02T00:00:00Z"
    )
    assert info.value.details["exchange"] == "stubex"


def test_start_not_before_end_is_rejected_before_fetching(store: CandleStore) -> None:
    source = CountingSource()
    with pytest.raises(InvalidDateRangeError, match=r"Start \(2024-01-02T00:00:00Z\) must be before end"):
        load(store, source, T0 + DAY, T0)
    assert source.calls == []


def test_unknown_timeframe_is_rejected_before_fetching(store: CandleStore) -> None:
    source = CountingSource()
    with pytest.raises(InvalidTimeframeError):
        load(store, source, T0, T0 + DAY, tf="7m")
    assert source.calls == []


def test_unknown_symbol_is_rejected_by_the_source(store: CandleStore) -> None:
    source = CountingSource()
    with pytest.raises(InvalidSymbolError):
        service.load_candles("stubex", "NOPE/USDT", "1h", T0, T0 + DAY, store=store, source=source)
    assert source.calls == []


def test_the_bar_still_forming_is_not_fetched(store: CandleStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "_now_ms", lambda: T0 + 5 * HOUR + 30_000)
    source = CountingSource()
    c = load(store, source, T0, T0 + DAY)
    assert source.calls == [(T0, T0 + 5 * HOUR)]
    assert int(c.timestamp[-1]) == T0 + 4 * HOUR


def test_recent_bars_the_exchange_has_not_published_yet_are_fetched_again_later(
    store: CandleStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = T0 + 5 * HOUR + 1_000  # the 04:00 bar closed a second ago
    monkeypatch.setattr(service, "_now_ms", lambda: now)
    load(store, LaggingSource(published_until=T0 + 4 * HOUR), T0, T0 + 5 * HOUR)
    assert store.missing_ranges("stubex", "BTC/USDT", "1h", T0, T0 + 5 * HOUR) == [(T0 + 4 * HOUR, T0 + 5 * HOUR)]
    source = CountingSource()
    c = load(store, source, T0, T0 + 5 * HOUR)
    assert source.calls == [(T0 + 4 * HOUR, T0 + 5 * HOUR)]
    assert len(c) == 5


def test_long_download_is_written_chunk_by_chunk_with_progress(
    store: CandleStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "FETCH_CHUNK_BARS", 10)
    source = CountingSource()
    seen: list[tuple[int, int]] = []
    c = service.load_candles(
        "stubex",
        "BTC/USDT",
        "1h",
        T0,
        T0 + DAY,
        store=store,
        source=source,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert source.calls == [
        (T0, T0 + 10 * HOUR),
        (T0 + 10 * HOUR, T0 + 20 * HOUR),
        (T0 + 20 * HOUR, T0 + DAY),
    ]
    assert len(c) == 24
    assert seen[-1] == (24, 24)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_interrupted_download_keeps_finished_chunks(store: CandleStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "FETCH_CHUNK_BARS", 10)
    with pytest.raises(ExchangeUnreachableError):
        load(store, CountingSource(fail_on_call=2), T0, T0 + DAY)
    assert len(store.read("stubex", "BTC/USDT", "1h")) == 10
    retry = CountingSource()
    assert len(load(store, retry, T0, T0 + DAY)) == 24
    assert retry.calls == [(T0 + 10 * HOUR, T0 + 20 * HOUR), (T0 + 20 * HOUR, T0 + DAY)]


def test_fully_stored_range_needs_no_exchange(store: CandleStore, monkeypatch: pytest.MonkeyPatch) -> None:
    load(store, CountingSource(), T0, T0 + DAY)

    def no_network(exchange_id: str, settings: object = None) -> CountingSource:
        raise AssertionError("the exchange should not be contacted")

    monkeypatch.setattr(service, "get_source", no_network)
    c = service.load_candles("stubex", "BTC/USDT", "1h", T0, T0 + DAY, store=store)
    assert len(c) == 24


def test_a_source_the_service_opened_itself_is_closed(store: CandleStore, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[CountingSource] = []

    def fake_get_source(exchange_id: str, settings: object = None) -> CountingSource:
        opened.append(CountingSource())
        return opened[-1]

    monkeypatch.setattr(service, "get_source", fake_get_source)
    service.load_candles("stubex", "BTC/USDT", "1h", T0, T0 + DAY, store=store)
    assert len(opened) == 1 and opened[0].closed


def test_synthetic_candles_are_generated_without_touching_the_store(tmp_path: Path) -> None:
    store = CandleStore(tmp_path / "never")
    c = service.load_candles("synthetic", "BTC/USDT", "1h", T0, T0 + DAY, store=store)
    expected = SyntheticSource().fetch("BTC/USDT", "1h", T0, T0 + DAY)
    assert np.array_equal(c.close, expected.close)
    assert len(c) == 24
    assert not store.root.exists()


def test_synthetic_range_before_2015_is_unavailable_with_a_hint() -> None:
    with pytest.raises(DataUnavailableError, match="synthetic data starts on 2015-01-01"):
        service.load_candles("synthetic", "BTC/USDT", "1d", 0, DAY * 10)


def test_future_range_is_unavailable_with_a_hint(store: CandleStore) -> None:
    with pytest.raises(DataUnavailableError, match="in the future"):
        load(store, CountingSource(), NOW + DAY, NOW + 2 * DAY)


def test_malformed_synthetic_symbol_is_rejected() -> None:
    with pytest.raises(InvalidSymbolError):
        service.load_candles("Synthetic", "BTCUSDT", "1h", T0, T0 + DAY)


def test_get_source_gives_the_synthetic_exchange() -> None:
    assert isinstance(service.get_source("synthetic"), SyntheticSource)


def test_get_source_builds_a_ccxt_source_with_retry_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from cracktrader.data.sources.ccxt_source import CcxtSource

    monkeypatch.setenv("CRACKTRADER_CCXT_MAX_RETRIES", "2")
    get_settings.cache_clear()
    source = service.get_source("binance")
    assert isinstance(source, CcxtSource)
    assert source.exchange_id == "binance" and source.max_retries == 2
    source.close()


def test_open_store_lives_under_the_data_dir(isolated_env: Path) -> None:
    assert service.open_store().root == isolated_env / "candles"


def test_download_returns_what_is_stored(store: CandleStore) -> None:
    info = service.download("stubex", "BTC/USDT", "1h", T0, T0 + DAY, store=store, source=CountingSource())
    assert (info.exchange, info.symbol, info.timeframe) == ("stubex", "BTC/USDT", "1h")
    assert (info.first, info.last, info.count, info.gaps) == (T0, T0 + 23 * HOUR, 24, [])


def test_download_of_synthetic_candles_stores_them(store: CandleStore) -> None:
    info = service.download("synthetic", "ETH/USDT", "1d", T0, T0 + 10 * DAY, store=store)
    assert info.count == 10
    assert store.missing_ranges("synthetic", "ETH/USDT", "1d", T0, T0 + 10 * DAY) == []


def test_imported_csv_is_served_without_fetching(store: CandleStore, tmp_path: Path) -> None:
    rows = [[T0 + k * HOUR, 10 + k, 11 + k, 9 + k, 10.5 + k, 1.0] for k in range(5)]
    write_csv(Candles.from_rows(rows), tmp_path / "in.csv", iso=True)
    info = service.import_csv(tmp_path / "in.csv", "MyData", "BTC/USDT", "1h", store)
    assert (info.exchange, info.count, info.first, info.last) == ("mydata", 5, T0, T0 + 4 * HOUR)
    source = CountingSource()
    c = service.load_candles("mydata", "BTC/USDT", "1h", T0, T0 + 5 * HOUR, store=store, source=source)
    assert source.calls == []
    assert c.close.tolist() == [10.5, 11.5, 12.5, 13.5, 14.5]


def test_importing_candles_off_the_timeframe_grid_is_rejected(store: CandleStore, tmp_path: Path) -> None:
    write_csv(Candles.from_rows([[T0 + 60_000, 1, 2, 0.5, 1.5, 1]]), tmp_path / "in.csv")
    with pytest.raises(InvalidDataError, match="2024-01-01T00:01:00Z is not the open time of a 1h bar"):
        service.import_csv(tmp_path / "in.csv", "mydata", "BTC/USDT", "1h", store)


def test_importing_into_the_synthetic_exchange_is_rejected(store: CandleStore, tmp_path: Path) -> None:
    write_csv(Candles.from_rows([[T0, 1, 2, 0.5, 1.5, 1]]), tmp_path / "in.csv")
    with pytest.raises(UserInputError, match="generates its own candles"):
        service.import_csv(tmp_path / "in.csv", "synthetic", "BTC/USDT", "1h", store)


def test_export_writes_the_stored_range(store: CandleStore, tmp_path: Path) -> None:
    load(store, CountingSource(), T0, T0 + DAY)
    rows = service.export_csv(tmp_path / "out.csv", "stubex", "BTC/USDT", "1h", T0, T0 + 3 * HOUR, store=store)
    assert rows == 3
    assert read_csv(tmp_path / "out.csv").close.tolist() == [1000.0, 1001.0, 1002.0]


def test_export_of_nothing_stored_says_to_download_first(store: CandleStore, tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError, match="download them first"):
        service.export_csv(tmp_path / "out.csv", "stubex", "BTC/USDT", "1h", store=store)


def test_export_of_synthetic_range_generates_it(tmp_path: Path) -> None:
    rows = service.export_csv(tmp_path / "out.csv", "synthetic", "BTC/USDT", "1d", T0, T0 + 7 * DAY, iso=True)
    assert rows == 7
    assert read_csv(tmp_path / "out.csv").timestamp.tolist() == [T0 + k * DAY for k in range(7)]
