"""Candles from real exchanges through ccxt, and the one factory that builds ccxt exchange objects."""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from cracktrader.data.candles import Candles
from cracktrader.data.sources.base import ProgressCallback
from cracktrader.data.timeframes import SUPPORTED_TIMEFRAMES, Timeframe, parse_timeframe
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

if TYPE_CHECKING:
    import ccxt

SYNTHETIC_EXCHANGE_ID = "synthetic"
OFFLINE_HINT = (
    "To work offline, import candles from a CSV file with `cracktrader data import`, "
    "or use `--exchange synthetic` for generated candles."
)
OVERRIDE_KEYS: tuple[str, ...] = ("base_url", "sandbox_base_url", "sandbox", "options", "config")
# When base_url points an exchange at a local server, keep load_markets on the spot API so that it
# does not wander to futures/margin/wallet endpoints the server may not implement (and for Binance,
# those live on other hosts).
LOCAL_SERVER_OPTIONS: dict[str, Any] = {
    "fetchMarkets": {"types": ["spot"]},
    "fetchCurrencies": False,
    "fetchMargins": False,
}
DEFAULT_PAGE_LIMIT = 500
MAX_BACKOFF_S = 60.0
SYMBOL_SUGGESTIONS = 10
_URL_SECTIONS: tuple[str, ...] = ("api", "test", "demo")

T = TypeVar("T")


def _ccxt() -> ModuleType:
    """Import ccxt on first use: it costs ~0.5 s, which offline commands should not pay."""
    import ccxt

    return ccxt


def supported_exchange_ids() -> list[str]:
    """Every exchange id that make_exchange or the offline source accepts."""
    return [*_ccxt().exchanges, SYNTHETIC_EXCHANGE_ID]


def _unknown_exchange(exchange_id: str) -> UnknownExchangeError:
    accepted = supported_exchange_ids()
    if exchange_id == SYNTHETIC_EXCHANGE_ID:
        message = (
            f"`{SYNTHETIC_EXCHANGE_ID}` is the offline candle generator, not a ccxt exchange; "
            "it has no exchange object. Use a ccxt exchange id such as binance, kraken or coinbase."
        )
    else:
        close = difflib.get_close_matches(exchange_id.lower(), accepted, n=3, cutoff=0.6)
        suggestion = f" Did you mean {', '.join(close)}?" if close else ""
        message = (
            f"Unknown exchange {exchange_id!r}.{suggestion} Use a ccxt exchange id such as binance, "
            f"kraken or coinbase, or `{SYNTHETIC_EXCHANGE_ID}` for offline generated candles."
        )
    return UnknownExchangeError(message, details={"exchange": exchange_id, "supported_exchanges": accepted})


def _rebase_url(url: str, base_url: str) -> str:
    """Replace the scheme and host of `url` with those of `base_url`, keeping the path and query."""
    base = urlsplit(base_url)
    parts = urlsplit(url)
    scheme = base.scheme
    if parts.scheme in ("ws", "wss"):
        # Websocket URLs (ccxt.pro) must stay websocket URLs, with TLS matching the base.
        scheme = "wss" if base.scheme == "https" else "ws"
    rebased = f"{scheme}://{base.netloc}{base.path.rstrip('/')}{parts.path}"
    return f"{rebased}?{parts.query}" if parts.query else rebased


def _rebase_tree(node: Any, base_url: str) -> Any:
    if isinstance(node, str):
        return _rebase_url(node, base_url) if "://" in node else node
    if isinstance(node, dict):
        return {key: _rebase_tree(value, base_url) for key, value in node.items()}
    return node


def point_exchange_at(exchange: ccxt.Exchange, base_url: str) -> None:
    """Rewrite every URL under urls['api'], ['test'] and ['demo'] to `base_url`, keeping paths.

    Rewriting all of them (not just the spot ones) means an unexpected call reaches the local server
    and fails there, instead of quietly going out to the real exchange.
    """
    urls = dict(exchange.urls)
    for section in _URL_SECTIONS:
        if section in urls:
            urls[section] = _rebase_tree(urls[section], base_url)
    exchange.urls = urls


def _exchange_overrides(exchange_id: str, settings: Settings) -> dict[str, Any]:
    overrides = settings.exchange_options.get(exchange_id) or {}
    if not isinstance(overrides, Mapping):
        raise UserInputError(
            f"exchange_options[{exchange_id!r}] must be an object with keys {', '.join(OVERRIDE_KEYS)}",
            details={"exchange": exchange_id},
        )
    unknown = sorted(set(overrides) - set(OVERRIDE_KEYS))
    if unknown:
        # A misspelt base_url would otherwise send a "local" run to the real exchange.
        raise UserInputError(
            f"Unknown exchange_options key(s) for {exchange_id}: {', '.join(unknown)}. "
            f"Accepted keys: {', '.join(OVERRIDE_KEYS)}",
            details={"exchange": exchange_id, "unknown_keys": unknown, "accepted_keys": list(OVERRIDE_KEYS)},
        )
    for key in ("options", "config"):
        if not isinstance(overrides.get(key) or {}, Mapping):
            raise UserInputError(
                f"exchange_options[{exchange_id!r}][{key!r}] must be an object",
                details={"exchange": exchange_id, "key": key},
            )
    return dict(overrides)


def make_exchange(exchange_id: str, settings: Settings | None = None) -> ccxt.Exchange:
    """Build the sync ccxt exchange `exchange_id`, applying `settings.exchange_options[exchange_id]`."""
    ccxt_module = _ccxt()
    if exchange_id not in ccxt_module.exchanges:
        raise _unknown_exchange(exchange_id)
    config, base_url = _client_config(exchange_id, settings or get_settings())
    exchange: ccxt.Exchange = getattr(ccxt_module, exchange_id)(config)
    _route(exchange, exchange_id, settings or get_settings(), base_url)
    return exchange


def make_async_exchange(exchange_id: str, settings: Settings | None = None) -> Any:
    """The asyncio client of `exchange_id`: ccxt.pro's (REST and WebSocket) where it has one, else REST only.

    Same overrides as `make_exchange`; build it inside the event loop that uses it and `await close()` it.
    """
    if exchange_id not in _ccxt().exchanges:
        raise _unknown_exchange(exchange_id)
    import ccxt.async_support
    import ccxt.pro

    module: ModuleType = ccxt.pro if exchange_id in ccxt.pro.exchanges else ccxt.async_support
    config, base_url = _client_config(exchange_id, settings or get_settings())
    exchange = getattr(module, exchange_id)(config)
    _route(exchange, exchange_id, settings or get_settings(), base_url)
    from cracktrader.exchanges.throttle import credit_idle_time

    credit_idle_time(exchange)  # else every lone request (an order) waits its cost in ms for nothing
    return exchange


def _route(exchange: Any, exchange_id: str, settings: Settings, base_url: str | None) -> None:
    """Point a client at its server: the configured base URL, and with `sandbox` the exchange's test network.

    `sandbox_base_url` stands in for the test network's URLs (a local fake of it); `set_sandbox_mode` then swaps
    them in, so a sandbox client reaches only that server.
    """
    overrides = settings.exchange_options.get(exchange_id) or {}
    sandbox_url = overrides.get("sandbox_base_url")
    test_urls = None
    if sandbox_url:
        point_exchange_at(exchange, str(sandbox_url))
        test_urls = exchange.urls.get("test")
    if base_url:
        point_exchange_at(exchange, base_url)
    if test_urls is not None:
        exchange.urls = {**exchange.urls, "test": test_urls}
    if overrides.get("sandbox") is True:
        exchange.set_sandbox_mode(True)


def sandbox_settings(settings: Settings, exchange_id: str) -> Settings:
    """`settings` whose clients of `exchange_id` use the exchange's sandbox (its test network)."""
    entry = dict(settings.exchange_options.get(exchange_id) or {})
    entry["sandbox"] = True
    return settings.model_copy(update={"exchange_options": {**settings.exchange_options, exchange_id: entry}})


def _client_config(exchange_id: str, settings: Settings) -> tuple[dict[str, Any], str | None]:
    """The ccxt constructor config of `exchange_id` and the base_url it is pointed at (None: the real one)."""
    overrides = _exchange_overrides(exchange_id, settings)
    base_url: str | None = overrides.get("base_url")
    config: dict[str, Any] = {}
    options: dict[str, Any] = {}
    if base_url:
        # A local server needs no client-side throttling; the limiter would only slow tests down.
        config["enableRateLimit"] = False
        options.update(LOCAL_SERVER_OPTIONS)
    config.update(overrides.get("config") or {})
    options.update(config.pop("options", None) or {})
    options.update(overrides.get("options") or {})
    if options:
        config["options"] = options
    return config, base_url


class CcxtSource:
    """A CandleSource that downloads candles from an exchange with ccxt."""

    def __init__(
        self,
        exchange_id: str,
        settings: Settings | None = None,
        *,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.exchange_id = exchange_id
        self.max_retries = max(0, max_retries)
        self.backoff_base = backoff_base
        self._sleep = sleep
        self.exchange = make_exchange(exchange_id, settings)
        self._symbols: list[str] | None = None

    # ------------------------------------------------------------ calls with retries

    def _call(self, action: str, fn: Callable[[], T], *, retries: int | None = None) -> T:
        """Run `fn`, retrying transient network failures with exponential backoff."""
        ccxt_module = _ccxt()
        # DDoSProtection, RateLimitExceeded, RequestTimeout and ExchangeNotAvailable are all NetworkErrors.
        retryable = (ccxt_module.NetworkError,)
        attempts = 1 + (self.max_retries if retries is None else retries)
        last: BaseException | None = None
        for attempt in range(attempts):
            try:
                return fn()
            except retryable as exc:
                last = exc
                if attempt + 1 < attempts:
                    self._sleep(min(self.backoff_base * 2**attempt, MAX_BACKOFF_S))
        reason = f"{type(last).__name__}: {last}" if last is not None else "unknown error"
        raise ExchangeUnreachableError(
            f"Could not reach {self.exchange_id} to {action} after {attempts} attempt(s) ({reason[:300]}). "
            f"{OFFLINE_HINT}",
            details={
                "exchange": self.exchange_id,
                "action": action,
                "attempts": attempts,
                "reason": reason[:1000],
                "hint": OFFLINE_HINT,
            },
        ) from last

    def _load_markets(self, *, retries: int | None = None) -> dict[str, Any]:
        markets = self.exchange.markets
        if markets:
            return dict(markets)
        try:
            return dict(self._call("load its market list", self.exchange.load_markets, retries=retries))
        except _ccxt().BaseError as exc:
            raise self._rejected("load its market list", exc) from exc

    def _rejected(self, action: str, exc: BaseException) -> DataUnavailableError:
        """A non-transient exchange error, wrapped so callers see a typed project error."""
        return DataUnavailableError(
            f"{self.exchange_id} refused to {action}: {type(exc).__name__}: {str(exc)[:300]}",
            details={"exchange": self.exchange_id, "reason": f"{type(exc).__name__}: {exc}"[:1000]},
        )

    # ------------------------------------------------------------ CandleSource

    def symbols(self) -> list[str]:
        """Spot symbols of the exchange, sorted (delisted ones included: their history is still served)."""
        if self._symbols is None:
            markets = self._load_markets()
            spot = (market for market in markets.values() if market.get("spot") and market.get("symbol"))
            self._symbols = sorted(str(market["symbol"]) for market in spot)
        return list(self._symbols)

    def validate_symbol(self, symbol: str) -> None:
        """Raise InvalidSymbolError, with suggestions, when `symbol` is not a spot market here."""
        supported = self.symbols()
        if symbol in supported:
            return
        raise self._invalid_symbol(symbol, supported)

    def _invalid_symbol(self, symbol: str, supported: list[str]) -> InvalidSymbolError:
        wanted = symbol.upper()
        base = wanted.split("/")[0]
        # Same base asset first (BTC/USD -> BTC/USDT), then look-alikes, then the start of the list.
        suggestions = [s for s in supported if s.split("/")[0] == base]
        suggestions += difflib.get_close_matches(wanted, supported, n=SYMBOL_SUGGESTIONS, cutoff=0.5)
        suggestions += supported[:SYMBOL_SUGGESTIONS]
        shown = list(dict.fromkeys(suggestions))[:SYMBOL_SUGGESTIONS]
        more = len(supported) - len(shown)
        listing = ", ".join(shown) + (f" (and {more} more)" if more > 0 else "")
        return InvalidSymbolError(
            f"Symbol {symbol} is not supported on {self.exchange_id}. Supported symbols include: {listing}",
            details={"symbol": symbol, "exchange": self.exchange_id, "supported_symbols": supported},
        )

    def _check_timeframe(self, tf: Timeframe) -> None:
        if not self.exchange.has.get("fetchOHLCV"):
            raise DataUnavailableError(
                f"{self.exchange_id} does not provide candles. {OFFLINE_HINT}",
                details={"exchange": self.exchange_id, "hint": OFFLINE_HINT},
            )
        offered = self.exchange.timeframes or {}
        if offered and tf.name not in offered:
            usable = [name for name in SUPPORTED_TIMEFRAMES if name in offered]
            raise InvalidTimeframeError(
                f"Timeframe {tf.name!r} is not offered by {self.exchange_id}. Use one of: {', '.join(usable)}",
                details={"timeframe": tf.name, "exchange": self.exchange_id, "supported_timeframes": usable},
            )

    def _page_limit(self, symbol: str) -> int:
        """Candles per request: ccxt's documented maximum for this market type."""
        markets = self.exchange.markets or {}
        market_type = str((markets.get(symbol) or {}).get("type") or "spot")
        features = self.exchange.features or {}
        for kind in (market_type, "spot"):
            limit = ((features.get(kind) or {}).get("fetchOHLCV") or {}).get("limit")
            if isinstance(limit, int) and limit > 0:
                return limit
        return DEFAULT_PAGE_LIMIT

    def _server_now_ms(self) -> int:
        """The exchange's clock where it publishes one, so a skewed local clock cannot admit a forming bar."""
        if self.exchange.has.get("fetchTime"):
            try:
                server_ms = self._call("read its clock", self.exchange.fetch_time)
            except _ccxt().BaseError:
                server_ms = None  # a non-transient refusal (e.g. NotSupported): the local clock will do
            if isinstance(server_ms, int | float) and server_ms > 0:
                return int(server_ms)
        return int(time.time() * 1000)

    def fetch(
        self,
        symbol: str,
        timeframe: Timeframe | str,
        start_ms: int,
        end_ms: int,
        progress: ProgressCallback | None = None,
    ) -> Candles:
        """Closed candles with start_ms <= timestamp < end_ms, paging forward by `since`.

        Calls `progress(done, expected)` after every page; where the exchange has gaps the last
        call reports `(done, done)` so progress displays finish at 100%.
        """
        tf = parse_timeframe(timeframe)
        if start_ms > end_ms:
            raise InvalidDateRangeError(
                f"Start {start_ms} is after end {end_ms}",
                details={"start_ms": start_ms, "end_ms": end_ms},
            )
        self.validate_symbol(symbol)
        self._check_timeframe(tf)
        if start_ms == end_ms:
            if progress is not None:
                progress(0, 0)
            return Candles.empty()
        # Bars opening at or after the floor of "now" are still forming and must not be stored.
        stop = min(end_ms, tf.floor(self._server_now_ms()))
        expected = tf.count(start_ms, stop) if stop > start_ms else 0
        if progress is not None:
            progress(0, expected)
        if expected == 0:
            return Candles.empty()
        page_limit = self._page_limit(symbol)
        rows: list[list[float]] = []
        since = start_ms
        while since < stop:
            # Ask for no more than the range still needs, so the last page is not padded.
            limit = max(1, min(page_limit, tf.count(since, stop)))
            page = self._fetch_page(symbol, tf, since, limit)
            fresh = [row for row in page if row[0] >= since]
            if not fresh:
                break  # the exchange has nothing new after `since`: we reached its last candle
            rows.extend(row for row in fresh if row[0] < stop)
            newest = max(int(row[0]) for row in fresh)
            # Continue after the newest bar received; this also steps over gaps the exchange skipped.
            since = tf.next(tf.floor(newest))
            if progress is not None:
                progress(min(len(rows), expected), expected)
        candles = Candles.from_rows(rows) if rows else Candles.empty()
        if progress is not None and len(candles) != expected:
            progress(len(candles), len(candles))
        return candles

    def _fetch_page(self, symbol: str, tf: Timeframe, since: int, limit: int) -> list[list[float]]:
        ccxt_module = _ccxt()

        def call() -> list[list[Any]]:
            return self.exchange.fetch_ohlcv(symbol, tf.name, since=since, limit=limit)

        try:
            raw = self._call(f"download {symbol} {tf.name} candles", call)
        except ccxt_module.BadSymbol as exc:
            raise self._invalid_symbol(symbol, self.symbols()) from exc
        except ccxt_module.BaseError as exc:
            raise self._rejected(f"serve {symbol} {tf.name} candles", exc) from exc
        page: list[list[float]] = []
        for row in raw or []:
            # Some exchanges send null prices for empty intervals; such rows are not real candles.
            if len(row) < 6 or any(value is None for value in row[:5]):
                continue
            page.append([float(row[0]), *(float(v) for v in row[1:5]), float(row[5] or 0.0)])
        return page

    def fee_rates(self, symbol: str) -> tuple[float, float] | None:
        """(maker, taker) from the loaded market, else ccxt's built-in fee table; never touches the network.

        A backtest on cached data must not wait on an unreachable exchange just to learn its fees.
        """
        markets = self.exchange.markets or {}
        candidates = [markets.get(symbol) or {}, (self.exchange.fees or {}).get("trading") or {}]
        for fees in candidates:
            maker, taker = fees.get("maker"), fees.get("taker")
            if isinstance(maker, int | float) and isinstance(taker, int | float):
                return float(maker), float(taker)
        return None

    def close(self) -> None:
        """Close the exchange's HTTP session."""
        self.exchange.close()

    def __enter__(self) -> CcxtSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
