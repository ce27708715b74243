"""A run's chart data, round trips and breakdowns, from its results in memory or in the store."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from cracktrader.data import service as data_service
from cracktrader.data.buckets import bucket_candles, bucket_last, bucket_size
from cracktrader.data.candles import Candles, ms_to_iso, to_ms
from cracktrader.data.timeframes import Timeframe, parse_timeframe
from cracktrader.engine.market import align
from cracktrader.errors import CracktraderError
from cracktrader.runs.breakdowns import by_symbol, monthly
from cracktrader.runs.results import RunResults
from cracktrader.runs.roundtrips import round_trip_dicts, round_trips, sort_round_trips
from cracktrader.settings import Settings
from cracktrader.strategies.registry import load_registry
from cracktrader.web.errors import ApiError
from cracktrader.web.runs.service import missing_results


async def load_results(runs: Any, store: Any, run_id: str) -> RunResults:
    """All of a run's results the caller may read (404 otherwise): from memory, else the whole stored run."""
    results = runs.memory_results(run_id)
    if results is not None:
        return results
    page = await store.read_page(run_id, max_points=None, limit=None, offset=0) if store is not None else None
    if page is None:
        await missing_results(store, run_id)
    assert page is not None
    return RunResults(page.head, page.equity, page.orders)


def parse_time(value: str | None, name: str) -> int | None:
    """A query's time (ISO 8601 or epoch ms) in ms; 422 INVALID_DATE_RANGE when it is not one."""
    if value is None:
        return None
    try:
        ms = to_ms(value)
    except CracktraderError:
        ms = None
    # Past year 9999 numpy and datetime cannot format it: refused like text that is no date.
    if ms is None or not -62_135_596_800_000 <= ms <= 253_402_300_799_000:
        raise ApiError(
            422,
            "INVALID_DATE_RANGE",
            f"{name} must be ISO 8601 (2024-01-01T00:00:00Z) or epoch milliseconds",
            details={"parameter": name, "value": value[:100]},
        )
    return ms


def check_order(start: int | None, end: int | None) -> None:
    """422 when a range ends before it starts."""
    if start is not None and end is not None and start >= end:
        raise ApiError(
            422,
            "INVALID_DATE_RANGE",
            "start must be before end",
            details={"start": ms_to_iso(start), "end": ms_to_iso(end)},
        )


def parse_tf(value: str) -> Timeframe:
    """A timeframe query; 422 INVALID_TIMEFRAME listing the valid ones otherwise."""
    try:
        return parse_timeframe(value)
    except CracktraderError as exc:
        raise ApiError(422, "INVALID_TIMEFRAME", exc.message, details=exc.details) from exc


def _config(results: RunResults) -> Mapping[str, Any]:
    config = results.head.get("config")
    return config if isinstance(config, Mapping) else {}


def run_symbol(results: RunResults, symbol: str | None) -> str:
    """The requested symbol of the run (its first by default); 404 SYMBOL_NOT_IN_RUN when it traded no such one."""
    symbols = [str(s) for s in results.head.get("symbols") or _config(results).get("symbols") or []]
    if not symbols:
        raise ApiError(404, "SYMBOL_NOT_IN_RUN", "The run has no symbols", details={"run_id": results.run_id})
    if symbol is None:
        return symbols[0]
    wanted = symbol.strip().upper()
    if wanted not in symbols:
        raise ApiError(
            404,
            "SYMBOL_NOT_IN_RUN",
            f"Run {results.run_id} has no symbol {wanted!r}",
            details={"run_id": results.run_id, "symbol": wanted, "symbols": symbols},
        )
    return wanted


def run_range(results: RunResults, tf: Timeframe) -> tuple[int, int] | None:
    """[start, end) of the run: its recorded inputs, else its equity curve; None when it has neither."""
    inputs = _config(results).get("inputs")
    if isinstance(inputs, Mapping) and inputs.get("start") and inputs.get("end"):
        return int(to_ms(inputs["start"]) or 0), int(to_ms(inputs["end"]) or 0)
    ts = results.equity["ts"]
    if ts.shape[0] == 0:
        return None
    return int(ts[0]), tf.next(int(ts[-1]))


def _columns(candles: Candles) -> dict[str, list[Any]]:
    def floats(values: np.ndarray) -> list[float | None]:
        out: list[float | None] = values.tolist()
        return out if np.isfinite(values).all() else [v if math.isfinite(v) else None for v in values.tolist()]

    return {
        "timestamp": candles.timestamp.tolist(),
        **{name: floats(getattr(candles, name)) for name in ("open", "high", "low", "close", "volume")},
    }


def candle_columns(candles: Candles) -> dict[str, list[Any]]:
    """Candles as the API's columns (non-finite values as null)."""
    return _columns(candles)


def _indicators(results: RunResults, symbol: str, candles: Candles, settings: Settings) -> dict[str, np.ndarray]:
    """The strategy's `plot` series over the run's candles of one symbol (causal: computed on the whole run)."""
    config = _config(results)
    registry = load_registry(settings)
    cls = registry.get(str(config.get("strategy_class") or config.get("strategy_name")))
    from cracktrader.runs.roundtrips import run_params

    strategy = cls(dict(run_params(results.head)))
    bars = align({symbol: candles}, 1.0).bars(0)
    raw = strategy.plot(bars)
    out: dict[str, np.ndarray] = {}
    for name, values in list(raw.items())[:20]:  # a handful of lines; more is a mistake, not a chart
        arr = np.asarray(values, dtype=np.float64)
        if arr.shape != (len(candles),):
            raise ValueError(f"plot()[{name!r}] has shape {arr.shape}; expected ({len(candles)},)")
        out[str(name)[:100]] = arr
    return out


def _chart(
    results: RunResults,
    *,
    symbol: str,
    start: int | None,
    end: int | None,
    max_points: int,
    max_markers: int,
    settings: Settings,
) -> dict[str, Any]:
    config = _config(results)
    tf = parse_tf(str(config.get("timeframe") or "1h"))
    exchange = str(config.get("exchange") or "synthetic")
    whole = run_range(results, tf)
    if whole is None:
        raise ApiError(404, "NOT_FOUND", f"Run {results.run_id} has no bars yet", details={"run_id": results.run_id})
    lo, hi = (
        max(start, whole[0]) if start is not None else whole[0],
        min(end, whole[1]) if end is not None else whole[1],
    )
    candles = data_service.load_run_candles(exchange, symbol, tf, whole[0], whole[1], settings=settings).candles
    series: dict[str, np.ndarray] = {}
    error = None
    try:
        series = _indicators(results, symbol, candles, settings)
    except Exception as exc:  # a user strategy's plot() may fail: the chart still shows candles and trades
        error = f"{type(exc).__name__}: {exc}"[:500]
    a, b = np.searchsorted(candles.timestamp, [lo, hi], side="left").tolist()
    visible = candles.slice_time(lo, hi)
    size = bucket_size(len(visible), max_points)
    shown = bucket_candles(visible, size)
    symbols = tuple(str(s) for s in results.head.get("symbols") or ())
    trips = round_trips(results)
    trips = trips[(trips["symbol"] == symbols.index(symbol)) & (trips["entry_ts"] < hi) & (trips["exit_ts"] >= lo)]
    return {
        "run_id": results.run_id,
        "exchange": exchange,
        "symbol": symbol,
        "symbols": list(symbols),
        "timeframe": tf.name,
        "run_range": {"start": ms_to_iso(whole[0]), "end": ms_to_iso(whole[1])},
        "start": ms_to_iso(int(visible.timestamp[0])) if len(visible) else None,
        "end": ms_to_iso(hi) if len(visible) else None,
        "bars": len(visible),
        "bucket_bars": size,
        "candles": _columns(shown),
        "indicators": [
            {"name": name, "values": [v if math.isfinite(v) else None for v in bucket_last(arr[a:b], size).tolist()]}
            for name, arr in series.items()
        ],
        "indicators_error": error,
        "markers": round_trip_dicts(trips[:max_markers], symbols),
        "markers_total": int(trips.shape[0]),
        "markers_truncated": bool(trips.shape[0] > max_markers),
    }


async def run_candles(
    *,
    runs: Any,
    store: Any,
    run_id: str,
    symbol: str | None,
    start: str | None,
    end: str | None,
    max_points: int,
    max_markers: int,
    settings: Settings,
) -> dict[str, Any]:
    """A run's candles of one symbol in a range (bucketed to `max_points`), its round trips and indicators."""
    start_ms, end_ms = parse_time(start, "start"), parse_time(end, "end")
    check_order(start_ms, end_ms)
    results = await load_results(runs, store, run_id)
    chosen = run_symbol(results, symbol)
    return await asyncio.to_thread(
        _chart,
        results,
        symbol=chosen,
        start=start_ms,
        end=end_ms,
        max_points=max_points,
        max_markers=max_markers,
        settings=settings,
    )


def _page(results: RunResults, by: str, descending: bool, limit: int, offset: int) -> tuple[list[Any], int]:
    trips = round_trips(results)
    ordered = sort_round_trips(trips, by=by, descending=descending)
    symbols = tuple(str(s) for s in results.head.get("symbols") or ())
    return round_trip_dicts(ordered[offset : offset + limit], symbols), int(trips.shape[0])


async def run_round_trips(
    *, runs: Any, store: Any, run_id: str, sort: str, order: str, limit: int, offset: int
) -> dict[str, Any]:
    """A sorted page of a run's round trips."""
    results = await load_results(runs, store, run_id)
    items, total = await asyncio.to_thread(_page, results, sort, order == "desc", limit, offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset, "sort": sort, "order": order}


def _breakdowns(results: RunResults) -> dict[str, Any]:
    symbols = tuple(str(s) for s in results.head.get("symbols") or ())
    initial = float(results.head.get("initial_cash") or 0.0)
    return {
        "run_id": results.run_id,
        "initial_cash": initial,
        "by_symbol": by_symbol(round_trips(results), symbols, initial),
        "monthly": monthly(results),
    }


async def run_breakdowns(*, runs: Any, store: Any, run_id: str) -> dict[str, Any]:
    """Per-symbol figures and monthly returns of a run."""
    results = await load_results(runs, store, run_id)
    return await asyncio.to_thread(_breakdowns, results)
