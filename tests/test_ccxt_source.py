"""CcxtSource and make_exchange, driving the real ccxt client against the fake Binance on loopback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pytest

from cracktrader.data.candles import Candles
from cracktrader.data.sources.base import CandleSource
from cracktrader.data.sources.ccxt_source import CcxtSource, make_exchange
from cracktrader.data.timeframes import SUPPORTED_TIMEFRAMES, Timeframe
from cracktrader.errors import (
    DataUnavailableError,
    ExchangeUnreachableError,
    InvalidDateRangeError,
    InvalidSymbolError,
    InvalidTimeframeError,
    UnknownExchangeError,
    UserInputError,
)
from cracktrader.settings import Settings, get_settings
from fakes.binance import DEFAULT_NOW_MS, FakeBinance, FakeMarket, candle, exchange_options_for
from support import free_loopback_port

MINUTE = 60_000
HOUR = 60 * MINUTE
MAY_1 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
JUNE_1 = 1_717_200_000_000  # 2024-06-01T00:00:00Z; the fake's clock reads 12:34:56.789 that day
KLINES = "/api/v3/klines"
BINANCE_TIMEFRAMES = (
    "1s",
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
    "1M",
)


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    with FakeBinance() as server:
        yield server


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def source(fake: FakeBinance, sleeps: list[float]) -> Iterator[CcxtSource]:
    src = CcxtSource("binance", Settings(exchange_options=fake.exchange_options()), sleep=sleeps.append)
    yield src
    src.close()


def expected_candles(symbol: str, interval: str, open_times: Iterable[int]) -> list[tuple[Any, ...]]:
    return [candle(symbol, interval, int(ts)) for ts in open_times]


def as_tuples(candles: Candles) -> list[tuple[Any, ...]]:
    return [
        (
            int(candles.timestamp[i]),
            *(float(getattr(candles, c)[i]) for c in ("open", "high", "low", "close", "volume")),
        )
        for i in range(len(candles))
    ]


# ---------------------------------------------------------------- downloading


def test_fetch_spanning_three_pages_makes_three_kline_calls(fake: FakeBinance, source: CcxtSource) -> None:
    end = MAY_1 + 2500 * MINUTE
    candles = source.fetch("BTC/USDT", Timeframe("1m"), MAY_1, end)

    assert len(candles) == 2500
    assert candles.timestamp[0] == MAY_1 and candles.timestamp[-1] == end - MINUTE
    assert as_tuples(candles) == expected_candles("BTC/USDT", "1m", range(MAY_1, end, MINUTE))
    pages = fake.requests_to(KLINES)
    assert [(int(p["startTime"]), int(p["limit"])) for p in pages] == [
        (MAY_1, 1000),
        (MAY_1 + 1000 * MINUTE, 1000),
        (MAY_1 + 2000 * MINUTE, 500),
    ]
    assert {(p["symbol"], p["interval"]) for p in pages} == {("BTCUSDT", "1m")}


def test_fetch_reports_progress_per_page(source: CcxtSource) -> None:
    calls: list[tuple[int, int]] = []
    source.fetch("ETH/USDT", Timeframe("1m"), MAY_1, MAY_1 + 2500 * MINUTE, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 2500), (1000, 2500), (2000, 2500), (2500, 2500)]


def test_fetch_returns_pinned_values(source: CcxtSource) -> None:
    candles = source.fetch("BTC/USDT", Timeframe("1h"), JUNE_1, JUNE_1 + 2 * HOUR)
    # Literal numbers, so a change to the fake's price function (or to parsing) is noticed.
    assert as_tuples(candles) == [
        (JUNE_1, 44126.78, 44434.42, 43716.13, 44284.07, 67.54557),
        (JUNE_1 + HOUR, 44284.07, 44921.63, 43957.81, 44518.04, 44.8887),
    ]
    assert candles.close[0] == candles.open[1]  # each close is the next bar's open


@pytest.mark.parametrize("interval", BINANCE_TIMEFRAMES)
def test_fetch_matches_fake_for_every_binance_timeframe(fake: FakeBinance, source: CcxtSource, interval: str) -> None:
    tf = Timeframe(interval)
    start = tf.floor(JUNE_1 - 1)  # a few closed bars before the fake's "now" for every timeframe
    for _ in range(4):
        start = tf.floor(start - 1)
    candles = source.fetch("SOL/USDT", tf, start, JUNE_1)

    grid = tf.grid(start, min(JUNE_1, tf.floor(DEFAULT_NOW_MS)))
    assert len(candles) == len(grid) >= 4
    assert as_tuples(candles) == expected_candles("SOL/USDT", interval, grid)
    candles.validate()  # high/low bracket open/close, prices positive
    assert np.all(candles.volume > 0)
    assert len(fake.requests_to(KLINES)) == 1


def test_fetch_excludes_the_still_forming_candle(fake: FakeBinance, source: CcxtSource) -> None:
    # The fake's clock is 12:34:56.789, so the 12:00 bar is still forming and must be left out.
    candles = source.fetch("BTC/USDT", Timeframe("1h"), JUNE_1, JUNE_1 + 24 * HOUR)

    assert len(candles) == 12
    assert candles.timestamp[-1] == JUNE_1 + 11 * HOUR
    assert fake.requests_to("/api/v3/time"), "the exchange's clock, not the local one, decides what is closed"


def test_fetch_excludes_forming_month(source: CcxtSource) -> None:
    start = 1_704_067_200_000  # 2024-01-01
    candles = source.fetch("BTC/USDT", Timeframe("1M"), start, JUNE_1 + 31 * 24 * HOUR)
    assert [int(t) for t in candles.timestamp] == [
        1_704_067_200_000, 1_706_745_600_000, 1_709_251_200_000, 1_711_929_600_000, 1_714_521_600_000,
    ]  # fmt: skip


def test_fetch_jumps_over_a_gap(fake: FakeBinance, source: CcxtSource) -> None:
    gap_start, gap_end = MAY_1 + 800 * MINUTE, MAY_1 + 1800 * MINUTE
    fake.add_gap(gap_start, gap_end, symbol="BTC/USDT")
    end = MAY_1 + 2500 * MINUTE
    calls: list[tuple[int, int]] = []

    candles = source.fetch("BTC/USDT", Timeframe("1m"), MAY_1, end, progress=lambda d, t: calls.append((d, t)))

    kept = [t for t in range(MAY_1, end, MINUTE) if not gap_start <= t < gap_end]
    assert len(candles) == 1500
    assert as_tuples(candles) == expected_candles("BTC/USDT", "1m", kept)
    # Page 1 returns 800 bars before the gap and 200 after it; page 2 resumes after the newest bar.
    assert [int(p["startTime"]) for p in fake.requests_to(KLINES)] == [MAY_1, MAY_1 + 2000 * MINUTE]
    assert calls[-1] == (1500, 1500)  # gaps shrink the total, and the display still completes


def test_fetch_gap_covering_a_whole_page(fake: FakeBinance, source: CcxtSource) -> None:
    fake.add_gap(MAY_1 + 10 * MINUTE, MAY_1 + 3000 * MINUTE)  # every market
    candles = source.fetch("ETH/USDT", Timeframe("1m"), MAY_1, MAY_1 + 3100 * MINUTE)
    expected = [
        *range(MAY_1, MAY_1 + 10 * MINUTE, MINUTE),
        *range(MAY_1 + 3000 * MINUTE, MAY_1 + 3100 * MINUTE, MINUTE),
    ]
    assert [int(t) for t in candles.timestamp] == expected
    assert len(fake.requests_to(KLINES)) == 1


def test_fetch_before_listing_starts_at_listing() -> None:
    listing = JUNE_1 - 5 * HOUR + 17 * MINUTE  # mid-bar: the bar containing the listing exists
    with FakeBinance(markets=[FakeMarket("NEW", listing_ms=listing)]) as fake:
        src = CcxtSource("binance", Settings(exchange_options=fake.exchange_options()), sleep=lambda s: None)
        candles = src.fetch("NEW/USDT", Timeframe("1h"), JUNE_1 - 48 * HOUR, JUNE_1)
        before = src.fetch("NEW/USDT", Timeframe("1h"), JUNE_1 - 48 * HOUR, JUNE_1 - 24 * HOUR)
        src.close()
    assert [int(t) for t in candles.timestamp] == [JUNE_1 - k * HOUR for k in range(5, 0, -1)]
    assert len(before) == 0


def test_fetch_stops_when_the_exchange_has_nothing_new() -> None:
    # A market whose last candle is old: the next page comes back empty and the download ends.
    with FakeBinance(now_ms=MAY_1 + 30 * MINUTE) as fake:
        src = CcxtSource("binance", Settings(exchange_options=fake.exchange_options()), sleep=lambda s: None)
        fake.add_gap(MAY_1 + 20 * MINUTE, MAY_1 + 10_000 * MINUTE)
        candles = src.fetch("BTC/USDT", Timeframe("1m"), MAY_1, MAY_1 + 30 * MINUTE)
        src.close()
    assert len(candles) == 20
    assert [int(p["startTime"]) for p in fake.requests_to(KLINES)] == [MAY_1, MAY_1 + 20 * MINUTE]


def test_fetch_empty_and_reversed_ranges(fake: FakeBinance, source: CcxtSource) -> None:
    assert len(source.fetch("BTC/USDT", Timeframe("1m"), MAY_1, MAY_1)) == 0
    assert fake.requests_to(KLINES) == [] and fake.requests_to("/api/v3/time") == []
    with pytest.raises(InvalidDateRangeError):
        source.fetch("BTC/USDT", Timeframe("1m"), MAY_1 + MINUTE, MAY_1)


def test_fetch_accepts_timeframe_strings(source: CcxtSource) -> None:
    candles = source.fetch("BTC/USDT", "5m", MAY_1, MAY_1 + 15 * MINUTE)
    assert [int(t) for t in candles.timestamp] == [MAY_1, MAY_1 + 5 * MINUTE, MAY_1 + 10 * MINUTE]


def test_timeframe_the_exchange_lacks_is_rejected_before_any_download(fake: FakeBinance, source: CcxtSource) -> None:
    assert "10s" in SUPPORTED_TIMEFRAMES
    with pytest.raises(InvalidTimeframeError) as info:
        source.fetch("BTC/USDT", Timeframe("10s"), MAY_1, MAY_1 + MINUTE)
    assert "'10s' is not offered by binance" in info.value.message
    assert info.value.details["supported_timeframes"] == list(BINANCE_TIMEFRAMES)
    assert fake.requests_to(KLINES) == []


# ---------------------------------------------------------------- retries and unreachable exchanges


def test_retries_after_503s_then_succeeds(fake: FakeBinance, source: CcxtSource, sleeps: list[float]) -> None:
    fake.fail_next(3, status=503, path=KLINES)
    candles = source.fetch("BTC/USDT", Timeframe("1m"), MAY_1, MAY_1 + 10 * MINUTE)

    assert as_tuples(candles) == expected_candles("BTC/USDT", "1m", range(MAY_1, MAY_1 + 10 * MINUTE, MINUTE))
    assert len(fake.requests_to(KLINES)) == 4
    assert sleeps == [0.5, 1.0, 2.0]  # exponential backoff from backoff_base


def test_retries_after_429_rate_limit(fake: FakeBinance, source: CcxtSource, sleeps: list[float]) -> None:
    fake.fail_next(2, status=429)  # lands on the first calls, the market list
    assert source.symbols() == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    assert len(fake.requests_to("/api/v3/exchangeInfo")) == 3
    assert sleeps == [0.5, 1.0]


def test_retries_after_a_request_timeout(fake: FakeBinance, sleeps: list[float]) -> None:
    settings = Settings(exchange_options=fake.exchange_options(config={"timeout": 200}))
    src = CcxtSource("binance", settings, sleep=sleeps.append)
    fake.fail_next(1, status=503, path=KLINES, delay_s=1.0)  # stalls past the 200 ms client timeout
    candles = src.fetch("BTC/USDT", Timeframe("1m"), MAY_1, MAY_1 + 3 * MINUTE)
    src.close()
    assert len(candles) == 3
    assert sleeps == [0.5]


def test_unreachable_after_retries_explains_offline_options(fake: FakeBinance, sleeps: list[float]) -> None:
    src = CcxtSource(
        "binance",
        Settings(exchange_options=fake.exchange_options()),
        max_retries=3,
        backoff_base=0.25,
        sleep=sleeps.append,
    )
    fake.fail_next(100, status=503, path=KLINES)
    with pytest.raises(ExchangeUnreachableError) as info:
        src.fetch("BTC/USDT", Timeframe("1m"), MAY_1, MAY_1 + 10 * MINUTE)
    src.close()

    err = info.value
    assert "cracktrader data import" in err.message and "CSV" in err.message
    assert "--exchange synthetic" in err.message
    assert "after 4 attempt(s)" in err.message
    assert err.details["attempts"] == 4 and err.details["exchange"] == "binance"
    assert "ExchangeNotAvailable" in err.details["reason"]
    assert err.to_dict()["code"] == "DATA_UNAVAILABLE" and err.status_code == 503
    assert len(fake.requests_to(KLINES)) == 4
    assert sleeps == [0.25, 0.5, 1.0]


def test_market_list_unreachable_gives_offline_hint(sleeps: list[float]) -> None:
    dead = f"http://127.0.0.1:{free_loopback_port()}"  # nothing listens here: connection refused
    src = CcxtSource("binance", Settings(exchange_options=exchange_options_for(dead)), sleep=sleeps.append)
    with pytest.raises(ExchangeUnreachableError) as info:
        src.fetch("BTC/USDT", Timeframe("1m"), MAY_1, MAY_1 + MINUTE)
    assert "market list" in info.value.message
    assert "synthetic" in info.value.message and "cracktrader data import" in info.value.message
    assert len(sleeps) == 5  # max_retries defaults to 5
    with pytest.raises(ExchangeUnreachableError):
        src.symbols()
    src.close()


def test_zero_retries_fails_on_first_error(fake: FakeBinance, sleeps: list[float]) -> None:
    src = CcxtSource("binance", Settings(exchange_options=fake.exchange_options()), max_retries=0, sleep=sleeps.append)
    fake.fail_next(1, status=502)
    with pytest.raises(ExchangeUnreachableError):
        src.symbols()
    assert sleeps == []
    assert src.symbols() == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]  # the next call is a fresh try
    src.close()


def test_exchange_side_bad_symbol_becomes_invalid_symbol_error(fake: FakeBinance, source: CcxtSource) -> None:
    fake.fail_next(1, status=400, body={"code": -1121, "msg": "Invalid symbol."}, path=KLINES)
    with pytest.raises(InvalidSymbolError) as info:
        source.fetch("ETH/USDT", Timeframe("1m"), MAY_1, MAY_1 + MINUTE)
    assert info.value.details["supported_symbols"] == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


def test_other_exchange_refusals_are_typed_and_not_retried(
    fake: FakeBinance, source: CcxtSource, sleeps: list[float]
) -> None:
    fake.fail_next(1, status=400, body={"code": -1013, "msg": "Filter failure: whatever."}, path=KLINES)
    with pytest.raises(DataUnavailableError) as info:
        source.fetch("ETH/USDT", Timeframe("1m"), MAY_1, MAY_1 + MINUTE)
    assert not isinstance(info.value, ExchangeUnreachableError)
    assert "BadRequest" in info.value.message
    assert sleeps == []


# ---------------------------------------------------------------- symbols and fees


def test_symbols_are_sorted_spot_markets() -> None:
    markets = [
        FakeMarket("XRP"),
        FakeMarket("ADA"),
        FakeMarket("OLD", status="BREAK"),
        FakeMarket("ETH", "BTC"),
    ]
    with FakeBinance(markets=markets) as fake:
        src = CcxtSource("binance", Settings(exchange_options=fake.exchange_options()))
        assert src.symbols() == ["ADA/USDT", "ETH/BTC", "OLD/USDT", "XRP/USDT"]
        src.close()


def test_unknown_symbol_lists_supported_symbols(fake: FakeBinance, source: CcxtSource) -> None:
    with pytest.raises(InvalidSymbolError) as info:
        source.validate_symbol("BTC/USD")
    err = info.value
    assert err.message.startswith("Symbol BTC/USD is not supported")
    assert "BTC/USDT" in err.message
    assert err.details == {
        "symbol": "BTC/USD",
        "exchange": "binance",
        "supported_symbols": ["BTC/USDT", "ETH/USDT", "SOL/USDT"],
    }
    assert err.to_dict()["code"] == "INVALID_SYMBOL" and err.status_code == 400
    with pytest.raises(InvalidSymbolError):
        source.fetch("DOGE/USDT", Timeframe("1m"), MAY_1, MAY_1 + MINUTE)
    assert fake.requests_to(KLINES) == []
    source.validate_symbol("SOL/USDT")  # known: no error


def test_unknown_symbol_message_is_bounded_but_details_are_complete() -> None:
    bases = [f"C{i:02d}" for i in range(30)]
    with FakeBinance(markets=[FakeMarket(b) for b in bases]) as fake:
        src = CcxtSource("binance", Settings(exchange_options=fake.exchange_options()))
        with pytest.raises(InvalidSymbolError) as info:
            src.validate_symbol("C05/EUR")
        src.close()
    err = info.value
    assert len(err.details["supported_symbols"]) == 30
    assert err.message.count("/USDT") == 10
    assert "C05/USDT" in err.message.split("include: ")[1].split(",")[0]  # the same base comes first
    assert err.message.endswith("(and 20 more)")


def test_fee_rates_come_from_the_loaded_market(source: CcxtSource) -> None:
    source.validate_symbol("BTC/USDT")  # loads the markets
    assert source.fee_rates("BTC/USDT") == (0.001, 0.001)


def test_fee_rates_use_ccxt_fee_table_without_any_request(sleeps: list[float]) -> None:
    dead = f"http://127.0.0.1:{free_loopback_port()}"
    src = CcxtSource("binance", Settings(exchange_options=exchange_options_for(dead)), sleep=sleeps.append)
    assert src.fee_rates("BTC/USDT") == (0.001, 0.001)  # binance's published spot rate
    assert sleeps == []  # fees never stall a backtest on cached data
    src.close()


def test_source_satisfies_the_protocol(source: CcxtSource) -> None:
    as_protocol: CandleSource = source
    assert as_protocol.exchange_id == "binance"


# ---------------------------------------------------------------- make_exchange


def test_unknown_exchange_id_is_rejected_with_accepted_ids() -> None:
    with pytest.raises(UnknownExchangeError) as info:
        make_exchange("binanse")
    err = info.value
    assert "Unknown exchange 'binanse'" in err.message and "Did you mean binance" in err.message
    assert "synthetic" in err.message
    assert "binance" in err.details["supported_exchanges"] and "kraken" in err.details["supported_exchanges"]
    assert err.details["supported_exchanges"][-1] == "synthetic"
    assert err.to_dict()["code"] == "UNKNOWN_EXCHANGE"
    with pytest.raises(UnknownExchangeError):
        CcxtSource("nope")


def test_synthetic_is_not_a_ccxt_exchange() -> None:
    with pytest.raises(UnknownExchangeError) as info:
        make_exchange("synthetic")
    assert "offline candle generator, not a ccxt exchange" in info.value.message
    assert "synthetic" in info.value.details["supported_exchanges"]


def _all_urls(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [url for value in node.values() for url in _all_urls(value)]
    return []


def test_url_rewrite_leaves_no_non_loopback_url(fake: FakeBinance) -> None:
    exchange = make_exchange("binance", Settings(exchange_options=fake.exchange_options()))
    urls = [u for section in ("api", "test", "demo") for u in _all_urls(exchange.urls[section])]

    assert len(urls) > 20
    assert all(u.startswith(fake.base_url + "/") for u in urls), [u for u in urls if "127.0.0.1" not in u]
    assert exchange.urls["api"]["public"] == fake.base_url + "/api/v3"
    assert exchange.urls["api"]["fapiPublic"] == fake.base_url + "/fapi/v1"
    assert exchange.urls["test"]["public"] == fake.base_url + "/api/v3"
    # Keeps load_markets on /api/v3 and turns the client-side throttle off for the local server.
    assert exchange.options["fetchMarkets"]["types"] == ["spot"]
    assert exchange.options["fetchCurrencies"] is False and exchange.options["fetchMargins"] is False
    assert exchange.enableRateLimit is False
    assert exchange.timeout == 5000
    exchange.load_markets()
    assert [path for _, path, _ in fake.request_log] == ["/api/v3/exchangeInfo"]


def test_websocket_urls_keep_a_websocket_scheme() -> None:
    from cracktrader.data.sources.ccxt_source import _rebase_url

    assert _rebase_url("wss://stream.binance.com:9443/ws", "http://127.0.0.1:81") == "ws://127.0.0.1:81/ws"
    assert _rebase_url("https://api.binance.com/api/v3?x=1", "http://127.0.0.1:81/p/") == (
        "http://127.0.0.1:81/p/api/v3?x=1"
    )


def test_config_and_options_overrides_win(fake: FakeBinance) -> None:
    overrides = {
        "binance": {
            "base_url": fake.base_url,
            "config": {"enableRateLimit": True, "timeout": 1234},
            "options": {"fetchMarkets": {"types": ["spot", "linear"]}, "recvWindow": 7000},
        }
    }
    exchange = make_exchange("binance", Settings(exchange_options=overrides))
    assert exchange.enableRateLimit is True and exchange.timeout == 1234
    assert exchange.options["fetchMarkets"]["types"] == ["spot", "linear"]
    assert exchange.options["recvWindow"] == 7000
    assert exchange.options["fetchCurrencies"] is False


def test_overrides_come_from_the_environment(fake: FakeBinance, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRACKTRADER_EXCHANGE_OPTIONS", fake.exchange_options_json())
    get_settings.cache_clear()
    src = CcxtSource("binance")  # settings default to get_settings()
    assert src.symbols() == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    assert fake.requests_to("/api/v3/exchangeInfo") == [{}]
    src.close()


def test_without_overrides_the_real_urls_are_kept() -> None:
    exchange = make_exchange("binance", Settings())  # construction only: nothing is requested
    assert exchange.urls["api"]["public"] == "https://api.binance.com/api/v3"
    assert exchange.enableRateLimit is True


def test_misspelt_override_key_is_rejected(fake: FakeBinance) -> None:
    with pytest.raises(UserInputError) as info:
        make_exchange("binance", Settings(exchange_options={"binance": {"baseurl": fake.base_url}}))
    assert "baseurl" in info.value.message and "base_url" in info.value.message


def test_importing_the_module_does_not_import_ccxt() -> None:
    code = "import sys, cracktrader.data.sources.ccxt_source; sys.exit('ccxt' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ---------------------------------------------------------------- the fake itself


def test_fake_answers_unknown_paths_with_404_and_serves_ticker_and_time(fake: FakeBinance) -> None:
    exchange = make_exchange("binance", Settings(exchange_options=fake.exchange_options()))
    assert exchange.fetch_time() == DEFAULT_NOW_MS
    ticker = exchange.fetch_ticker("BTC/USDT")
    assert ticker["timestamp"] == DEFAULT_NOW_MS
    assert ticker["low"] <= ticker["last"] <= ticker["high"]
    assert ticker["bid"] < ticker["ask"]
    import ccxt

    with pytest.raises(ccxt.ExchangeNotAvailable, match="404"):
        exchange.fapiPublicGetExchangeInfo()
    exchange.close()


def test_fake_klines_without_start_time_returns_the_latest_bars(fake: FakeBinance) -> None:
    bars = fake.klines("BTC/USDT", "1h", limit=3)
    floor_now = DEFAULT_NOW_MS // HOUR * HOUR
    assert [b[0] for b in bars] == [floor_now - 2 * HOUR, floor_now - HOUR, floor_now]  # forming bar included
    gap_bars = fake.klines("BTC/USDT", "1h", end_ms=floor_now, limit=3)
    fake.add_gap(floor_now - HOUR, floor_now)
    assert [b[0] for b in fake.klines("BTC/USDT", "1h", end_ms=floor_now, limit=3)] == [
        floor_now - 3 * HOUR,
        floor_now - 2 * HOUR,
        floor_now,
    ]
    assert gap_bars[-1] == candle("BTC/USDT", "1h", floor_now)
