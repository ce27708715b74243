"""A run's chart data, round trips and breakdowns, from its results in memory or in the store."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cracktrader.data import service as data_service
from cracktrader.data.buckets import bucket_candles, bucket_last, bucket_size
from cracktrader.data.candles import Candles, ms_to_iso, to_ms
from cracktrader.data.timeframes import Timeframe, parse_timeframe
from cracktrader.engine.market import align
from cracktrader.errors import CracktraderError
from cracktrader.runs.breakdowns import by_symbol, monthly
from cracktrader.runs.results import EQUITY_DTYPE, ORDER_DTYPE, RunResults
from cracktrader.runs.roundtrips import round_trip_dicts, round_trips, run_params, sort_round_trips
from cracktrader.settings import Settings
from cracktrader.strategies.registry import load_registry
from cracktrader.web.analysis.cache import CHARTS, FINISHED, ROUND_TRIPS
from cracktrader.web.errors import ApiError
from cracktrader.web.runs.service import export_chunks, export_head


async def run_head(runs: Any, store: Any, run_id: str) -> dict[str, Any]:
    """A run's results head, if the caller may read the run (404 otherwise)."""
    return await export_head(runs, store, run_id)


async def _series(runs: Any, store: Any, run_id: str, kind: str) -> np.ndarray:
    """All of a run's equity points or orders, from memory or the store's chunks."""
    parts = [chunk async for chunk in export_chunks(runs, store, run_id, kind)]
    dtype = EQUITY_DTYPE if kind == "equity" else ORDER_DTYPE
    return np.concatenate(parts) if parts else np.empty(0, dtype)


def _finished(head: Mapping[str, Any]) -> bool:
    return head.get("status") in FINISHED


async def run_trips(runs: Any, store: Any, run_id: str, head: dict[str, Any]) -> np.ndarray:
    """The run's round trips (computed once for a finished run)."""
    cached = ROUND_TRIPS.get(run_id) if _finished(head) else None
    if cached is not None:
        return cached
    orders = await _series(runs, store, run_id, "orders")
    trips = await asyncio.to_thread(round_trips, RunResults(head, np.empty(0, EQUITY_DTYPE), orders))
    if _finished(head):
        ROUND_TRIPS.put(run_id, trips)
    return trips


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


def _config(head: Mapping[str, Any]) -> Mapping[str, Any]:
    config = head.get("config")
    return config if isinstance(config, Mapping) else {}


def _symbols(head: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(s) for s in head.get("symbols") or _config(head).get("symbols") or ())


def run_symbol(head: Mapping[str, Any], symbol: str | None) -> str:
    """The requested symbol of the run (its first by default); 404 SYMBOL_NOT_IN_RUN when it traded no such one."""
    symbols = list(_symbols(head))
    run_id = head.get("run_id")
    if not symbols:
        raise ApiError(404, "SYMBOL_NOT_IN_RUN", "The run has no symbols", details={"run_id": run_id})
    if symbol is None:
        return symbols[0]
    wanted = symbol.strip().upper()
    if wanted not in symbols:
        raise ApiError(
            404,
            "SYMBOL_NOT_IN_RUN",
            f"Run {run_id} has no symbol {wanted!r}",
            details={"run_id": run_id, "symbol": wanted, "symbols": symbols},
        )
    return wanted


def recorded_range(head: Mapping[str, Any]) -> tuple[int, int] | None:
    """[start, end) a backtest recorded in its inputs; None for runs without (sessions)."""
    inputs = _config(head).get("inputs")
    if isinstance(inputs, Mapping) and inputs.get("start") and inputs.get("end"):
        return int(to_ms(inputs["start"]) or 0), int(to_ms(inputs["end"]) or 0)
    return None


def equity_range(equity: np.ndarray, tf: Timeframe) -> tuple[int, int] | None:
    """[first bar, end of the last bar) of an equity curve; None when it is empty."""
    ts = equity["ts"]
    return (int(ts[0]), tf.next(int(ts[-1]))) if ts.shape[0] else None


def candle_columns(candles: Candles) -> dict[str, list[Any]]:
    """Candles as the API's columns (non-finite values as null)."""

    def floats(values: np.ndarray) -> list[float | None]:
        out: list[float | None] = values.tolist()
        return out if np.isfinite(values).all() else [v if math.isfinite(v) else None for v in values.tolist()]

    return {
        "timestamp": candles.timestamp.tolist(),
        **{name: floats(getattr(candles, name)) for name in ("open", "high", "low", "close", "volume")},
    }


def _indicators(head: Mapping[str, Any], symbol: str, candles: Candles, settings: Settings) -> dict[str, np.ndarray]:
    """The strategy's `plot` series over the run's candles of one symbol (causal: computed on the whole run)."""
    config = _config(head)
    registry = load_registry(settings)
    cls = registry.get(str(config.get("strategy_class") or config.get("strategy_name")))
    strategy = cls(dict(run_params(head)))
    bars = align({symbol: candles}, 1.0).bars(0)
    raw = strategy.plot(bars)
    out: dict[str, np.ndarray] = {}
    for name, values in list(raw.items())[:20]:  # a handful of lines; more is a mistake, not a chart
        arr = np.asarray(values, dtype=np.float64)
        if arr.shape != (len(candles),):
            raise ValueError(f"plot()[{name!r}] has shape {arr.shape}; expected ({len(candles)},)")
        out[str(name)[:100]] = arr
    return out


@dataclass(frozen=True, slots=True)
class ChartBase:
    """What a run's chart of one symbol is cut from: the run's candles and the plotted series over them."""

    candles: Candles
    series: dict[str, np.ndarray]
    error: str | None


def _chart_base(
    head: Mapping[str, Any], symbol: str, exchange: str, tf: Timeframe, whole: tuple[int, int], settings: Settings
) -> ChartBase:
    candles = data_service.load_run_candles(exchange, symbol, tf, whole[0], whole[1], settings=settings).candles
    try:
        return ChartBase(candles, _indicators(head, symbol, candles, settings), None)
    except Exception as exc:  # a user strategy's plot() may fail: the chart still shows candles and trades
        return ChartBase(candles, {}, f"{type(exc).__name__}: {exc}"[:500])


def _chart(
    head: Mapping[str, Any],
    base: ChartBase,
    trips: np.ndarray,
    *,
    symbol: str,
    tf: Timeframe,
    exchange: str,
    whole: tuple[int, int],
    start: int | None,
    end: int | None,
    max_points: int,
    max_markers: int,
) -> dict[str, Any]:
    lo = max(start, whole[0]) if start is not None else whole[0]
    hi = min(end, whole[1]) if end is not None else whole[1]
    candles = base.candles
    a, b = np.searchsorted(candles.timestamp, [lo, hi], side="left").tolist()
    visible = candles.slice_time(lo, hi)
    size = bucket_size(len(visible), max_points)
    symbols = _symbols(head)
    mine = trips[(trips["symbol"] == symbols.index(symbol)) & (trips["entry_ts"] < hi) & (trips["exit_ts"] >= lo)]
    return {
        "run_id": head.get("run_id"),
        "exchange": exchange,
        "symbol": symbol,
        "symbols": list(symbols),
        "timeframe": tf.name,
        "run_range": {"start": ms_to_iso(whole[0]), "end": ms_to_iso(whole[1])},
        "start": ms_to_iso(int(visible.timestamp[0])) if len(visible) else None,
        "end": ms_to_iso(hi) if len(visible) else None,
        "bars": len(visible),
        "bucket_bars": size,
        "candles": candle_columns(bucket_candles(visible, size)),
        "indicators": [
            {"name": name, "values": [v if math.isfinite(v) else None for v in bucket_last(arr[a:b], size).tolist()]}
            for name, arr in base.series.items()
        ],
        "indicators_error": base.error,
        "markers": round_trip_dicts(mine[:max_markers], symbols),
        "markers_total": int(mine.shape[0]),
        "markers_truncated": bool(mine.shape[0] > max_markers),
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
    head = await run_head(runs, store, run_id)
    chosen = run_symbol(head, symbol)
    config = _config(head)
    tf = parse_tf(str(config.get("timeframe") or "1h"))
    exchange = str(config.get("exchange") or data_service.SYNTHETIC)
    whole = recorded_range(head) or equity_range(await _series(runs, store, run_id, "equity"), tf)
    if whole is None:
        raise ApiError(404, "NOT_FOUND", f"Run {run_id} has no bars yet", details={"run_id": run_id})
    key = (run_id, chosen)
    base: ChartBase | None = CHARTS.get(key) if _finished(head) else None
    if base is None:
        base = await asyncio.to_thread(_chart_base, head, chosen, exchange, tf, whole, settings)
        if _finished(head):
            CHARTS.put(key, base)
    trips = await run_trips(runs, store, run_id, head)
    return await asyncio.to_thread(
        _chart,
        head,
        base,
        trips,
        symbol=chosen,
        tf=tf,
        exchange=exchange,
        whole=whole,
        start=start_ms,
        end=end_ms,
        max_points=max_points,
        max_markers=max_markers,
    )


def _page(
    trips: np.ndarray, symbols: tuple[str, ...], by: str, descending: bool, limit: int, offset: int
) -> list[dict[str, Any]]:
    ordered = sort_round_trips(trips, by=by, descending=descending)
    return round_trip_dicts(ordered[offset : offset + limit], symbols)


async def run_round_trips(
    *, runs: Any, store: Any, run_id: str, sort: str, order: str, limit: int, offset: int
) -> dict[str, Any]:
    """A sorted page of a run's round trips."""
    head = await run_head(runs, store, run_id)
    trips = await run_trips(runs, store, run_id, head)
    items = await asyncio.to_thread(_page, trips, _symbols(head), sort, order == "desc", limit, offset)
    total = int(trips.shape[0])
    return {"items": items, "total": total, "limit": limit, "offset": offset, "sort": sort, "order": order}


async def run_breakdowns(*, runs: Any, store: Any, run_id: str) -> dict[str, Any]:
    """Per-symbol figures and monthly returns of a run."""
    head = await run_head(runs, store, run_id)
    trips = await run_trips(runs, store, run_id, head)
    equity = await _series(runs, store, run_id, "equity")
    initial = float(head.get("initial_cash") or 0.0)
    results = RunResults(head, equity, np.empty(0, ORDER_DTYPE))
    return {
        "run_id": head.get("run_id") or run_id,
        "initial_cash": initial,
        "by_symbol": by_symbol(trips, _symbols(head), initial),
        "monthly": await asyncio.to_thread(monthly, results),
    }
