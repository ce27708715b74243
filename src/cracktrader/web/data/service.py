"""Stored candles, market search and the stored sets, for the dashboard's charts and forms."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from cracktrader.data import service as data_service
from cracktrader.data.candles import ms_to_iso
from cracktrader.data.store import DatasetInfo
from cracktrader.data.timeframes import Timeframe
from cracktrader.errors import DataUnavailableError, UnknownExchangeError
from cracktrader.settings import Settings
from cracktrader.web.analysis.service import candle_columns
from cracktrader.web.catalog.router import exchange_catalog

# An exchange's market list changes rarely; loading it is a public REST call of a second or more.
MARKETS_TTL_S = 3600.0
_markets: dict[str, tuple[float, list[str]]] = {}
LARGEST_GAPS = 5


def known_exchange(exchange: str) -> str:
    """The exchange id, lower-cased; 404 UNKNOWN_EXCHANGE when neither ccxt nor `synthetic` knows it."""
    name = exchange.strip().lower()
    if name not in {item["id"] for item in exchange_catalog()}:
        raise UnknownExchangeError(f"Unknown exchange {name!r}: see GET /api/v1/exchanges", details={"exchange": name})
    return name


def _symbols(exchange: str, settings: Settings) -> list[str]:
    cached = _markets.get(exchange)
    if cached is not None and time.monotonic() - cached[0] < MARKETS_TTL_S:
        return cached[1]
    source = data_service.get_source(exchange, settings)
    try:
        symbols = sorted(source.symbols())
    finally:
        source.close()
    _markets[exchange] = (time.monotonic(), symbols)
    return symbols


async def markets(*, exchange: str, q: str | None, limit: int, settings: Settings) -> dict[str, Any]:
    """The exchange's markets whose symbol contains `q` (any case), at most `limit`."""
    name = await asyncio.to_thread(known_exchange, exchange)
    symbols = await asyncio.to_thread(_symbols, name, settings)
    needle = (q or "").strip().upper()
    found = [s for s in symbols if needle in s.upper()]
    items = []
    for symbol in found[:limit]:
        base, _, quote = symbol.partition("/")
        items.append({"symbol": symbol, "base": base, "quote": quote.split(":")[0]})
    return {
        "exchange": name,
        "items": items,
        "total": len(found),
        "limit": limit,
        "any_symbol": name == data_service.SYNTHETIC,
    }


def _read(
    exchange: str, symbol: str, tf: Timeframe, start: int | None, end: int | None, limit: int, settings: Settings
) -> dict[str, Any]:
    if exchange == data_service.SYNTHETIC:
        # Generated on demand: the range is bounded by `limit` bars before anything is made.
        end = end if end is not None else tf.floor(int(time.time() * 1000))
        if start is None:
            start = end - limit * tf.ms
        stop = min(end, start + (limit + 1) * tf.ms)
        candles = data_service.load_candles(exchange, symbol, tf, start, stop, settings=settings)
        more_after = stop < end
    else:
        store = data_service.open_store(settings)
        if not store.path_for(exchange, symbol, tf).exists():
            raise DataUnavailableError(
                f"No stored {tf} candles for {exchange} {symbol}: download them first (POST /api/v1/data/downloads)",
                details={"exchange": exchange, "symbol": symbol, "timeframe": tf.name},
            )
        candles = store.read(exchange, symbol, tf, start, end)
        more_after = False
    truncated = more_after or len(candles) > limit
    next_start = int(candles.timestamp[limit]) if len(candles) > limit else None
    shown = candles.slice_time(None, next_start) if next_start is not None else candles
    return {
        "exchange": exchange,
        "symbol": symbol,
        "timeframe": tf.name,
        "candles": candle_columns(shown),
        "count": len(shown),
        "truncated": truncated,
        "next_start": next_start if next_start is not None else (stop if more_after else None),
    }


async def stored_candles(
    *, exchange: str, symbol: str, tf: Timeframe, start: int | None, end: int | None, limit: int, settings: Settings
) -> dict[str, Any]:
    """Up to `limit` candles opening in [start, end): the store's, or generated ones for `synthetic`."""
    return await asyncio.to_thread(
        _read, exchange.strip().lower(), symbol.strip().upper(), tf, start, end, limit, settings
    )


def dataset_dict(info: DatasetInfo) -> dict[str, Any]:
    """A stored set as the API shows it (no file path: that is the server's business)."""
    tf = info.timeframe
    from cracktrader.data.timeframes import parse_timeframe

    frame = parse_timeframe(tf)
    sized = sorted(((frame.count(a, b), a, b) for a, b in info.gaps), key=lambda g: (-g[0], g[1]))
    return {
        "exchange": info.exchange,
        "symbol": info.symbol,
        "timeframe": tf,
        "first": ms_to_iso(info.first) if info.first is not None else None,
        "last": ms_to_iso(info.last) if info.last is not None else None,
        "count": info.count,
        "size_bytes": info.size_bytes,
        "gaps": len(info.gaps),
        "missing_bars": sum(g[0] for g in sized),
        "largest_gaps": [
            {"start": ms_to_iso(a), "end": ms_to_iso(b), "missing_bars": bars} for bars, a, b in sized[:LARGEST_GAPS]
        ],
    }


async def candle_sets(*, limit: int, offset: int, settings: Settings) -> dict[str, Any]:
    """The stored sets, paged, sorted by exchange, symbol and timeframe."""
    infos = await asyncio.to_thread(lambda: data_service.open_store(settings).list())
    page = [dataset_dict(i) for i in infos[offset : offset + limit]]
    return {"items": page, "total": len(infos), "limit": limit, "offset": offset}
