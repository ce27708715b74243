"""A run's results in columnar form, and the pages of the results document built from them.

Every per-bar and per-order structure is a numpy record array: a 1 M-bar run's equity curve is 24 MB, and ISO
timestamps and dicts exist only for the slice a response or an export is writing. The same functions page the
results of a run in memory and of a run in the store (which hands them one stored chunk at a time).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cracktrader.engine.backtest import BacktestResult
from cracktrader.engine.records import (
    O_BAR,
    O_CREATED,
    O_FEE,
    O_ID,
    O_PNL,
    O_PRICE,
    O_QTY,
    O_REASON,
    O_RETURN,
    O_SIDE,
    O_STATUS,
    O_SYMBOL,
    O_TRIGGER,
    O_TYPE,
    REASON_NAMES,
    STATUS_FILLED,
    STATUS_NAMES,
    TYPE_NAMES,
)

# One point of the equity curve: bar open time (UTC ms), portfolio value and cash at the bar's close.
EQUITY_DTYPE = np.dtype([("ts", "<i8"), ("value", "<f8"), ("cash", "<f8")])
# One order: times in UTC ms (ts = -1 while it has neither filled nor been rejected); codes index the names in
# engine.records; symbol indexes the run's symbols.
ORDER_DTYPE = np.dtype(
    [
        ("id", "<i8"),
        ("created", "<i8"),
        ("ts", "<i8"),
        ("symbol", "<i4"),
        ("side", "i1"),
        ("type", "i1"),
        ("status", "i1"),
        ("reason", "i1"),
        ("size", "<f8"),
        ("price", "<f8"),
        ("trigger", "<f8"),
        ("fee", "<f8"),
        ("pnl", "<f8"),
        ("ret", "<f8"),
    ]
)
HEAD_FORMAT = 2
# Elements per json.dumps call: big enough for the C encoder to dominate, small enough that one call holds the
# GIL for a few milliseconds (so the event loop keeps answering while a worker thread encodes a large page).
# 5,000 order dicts held it 15-100 ms on a busy 2-core machine; 500 hold it 2-10 ms.
JSON_CHUNK = 500
# Timestamps per np.datetime_as_string call, which holds the GIL throughout (200k took 130 ms in one call).
ISO_CHUNK = 4_096


@dataclass(slots=True)
class RunResults:
    """Everything a run produced: the head (small, JSON) and its equity curve and orders as record arrays."""

    head: dict[str, Any]
    equity: np.ndarray  # EQUITY_DTYPE
    orders: np.ndarray  # ORDER_DTYPE

    @property
    def run_id(self) -> str | None:
        """The run's id."""
        value = self.head.get("run_id")
        return None if value is None else str(value)

    @property
    def n_fills(self) -> int:
        """How many orders filled."""
        return int(np.count_nonzero(self.orders["status"] == STATUS_FILLED))


@dataclass(slots=True)
class ResultsPage:
    """One page of a run's results: the head, the thinned equity curve and a window of orders and fills."""

    head: dict[str, Any]
    equity: np.ndarray
    orders: np.ndarray
    trades: np.ndarray
    offset: int
    limit: int
    equity_total: int
    orders_total: int
    trades_total: int
    paged: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Equity points, orders and fills in the page: the work of encoding it."""
        return int(self.equity.shape[0] + self.orders.shape[0] + self.trades.shape[0])

    def document(self) -> dict[str, Any]:
        """The results document of this page (seed 003's `GET /results` shape plus `page`)."""
        doc = head_document(self.head)
        symbols = tuple(self.head.get("symbols") or ())
        initial = float(self.head.get("initial_cash") or 0.0)
        doc["orders"] = order_dicts(self.orders, symbols)
        doc["trades"] = trade_dicts(self.trades, symbols, first_id=self.offset + 1)
        doc["equity_curve"] = equity_dicts(self.equity, initial)
        if self.paged:
            doc["page"] = {
                "trades": {"offset": self.offset, "limit": self.limit, "total": self.trades_total},
                "orders": {"offset": self.offset, "limit": self.limit, "total": self.orders_total},
                "equity_points": int(self.equity.shape[0]),
                "equity_points_total": self.equity_total,
            }
        return doc

    def json_bytes(self) -> bytes:
        """The page's document as compact JSON, encoded a few thousand elements at a time."""
        # consume: rows are freed as they are encoded; freeing a 250k-row document at once held the GIL ~100 ms.
        return b"".join(piece.encode("ascii") for piece in json_pieces(self.document(), consume=True))


def encode_page(page: ResultsPage) -> bytes:
    """A page's JSON bytes (a top-level function, so a worker process can run it)."""
    return page.json_bytes()


# Building results ----------------------------------------------------------------------------------------------


def head_document(head: Mapping[str, Any]) -> dict[str, Any]:
    """The document's scalar fields, in the document's order, from a stored head."""
    doc = {
        "run_id": head.get("run_id"),
        "config": head.get("config"),
        "status": head.get("status"),
        "start_time": head.get("start_time"),
        "end_time": head.get("end_time"),
        "orders": [],
        "trades": [],
        "positions": list(head.get("positions") or []),
        "equity_curve": [],
        "performance_metrics": dict(head.get("performance_metrics") or {}),
        "final_value": head.get("final_value"),
        "error": head.get("error"),
    }
    if head.get("rerun") is not None:
        doc["rerun"] = head["rerun"]  # a rerun's comparison with the run it repeated (runs.rerun.RerunComparison)
    return doc


def make_head(
    *,
    run_id: str | None,
    config: dict[str, Any] | None,
    status: str,
    start_time: str | None = None,
    end_time: str | None = None,
    symbols: Iterable[str] = (),
    initial_cash: float | None = None,
    positions: list[dict[str, Any]] | None = None,
    performance_metrics: dict[str, Any] | None = None,
    final_value: float | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """A results head: everything of a run's results but its long series."""
    return {
        "format": HEAD_FORMAT,
        "run_id": run_id,
        "config": config,
        "status": status,
        "start_time": start_time,
        "end_time": end_time,
        "symbols": list(symbols),
        "initial_cash": initial_cash,
        "positions": positions or [],
        "performance_metrics": performance_metrics or {},
        "final_value": final_value,
        "error": error,
    }


def empty_results(**head: Any) -> RunResults:
    """Results of a run that produced none (failed early, or still running)."""
    return RunResults(make_head(**head), np.empty(0, EQUITY_DTYPE), np.empty(0, ORDER_DTYPE))


def order_records(rows: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Engine order rows (see engine.records) as ORDER_DTYPE records with times in ms."""
    out = np.empty(rows.shape[0], ORDER_DTYPE)
    if rows.shape[0] == 0:
        return out
    bar = rows[:, O_BAR].astype(np.int64)
    out["id"] = rows[:, O_ID]
    out["created"] = timestamps[rows[:, O_CREATED].astype(np.int64)]
    out["ts"] = np.where(bar >= 0, timestamps[np.clip(bar, 0, None)], -1)
    out["symbol"] = rows[:, O_SYMBOL]
    out["side"] = np.where(rows[:, O_SIDE] > 0, 1, -1)
    out["type"] = rows[:, O_TYPE]
    out["status"] = rows[:, O_STATUS]
    out["reason"] = rows[:, O_REASON]
    out["size"] = rows[:, O_QTY]
    out["price"] = rows[:, O_PRICE]
    out["trigger"] = rows[:, O_TRIGGER]
    out["fee"] = rows[:, O_FEE]
    out["pnl"] = rows[:, O_PNL]
    out["ret"] = rows[:, O_RETURN]
    return out


def equity_records(timestamps: np.ndarray, value: np.ndarray, cash: np.ndarray) -> np.ndarray:
    """Equity points as EQUITY_DTYPE records."""
    out = np.empty(value.shape[0], EQUITY_DTYPE)
    out["ts"], out["value"], out["cash"] = timestamps[: value.shape[0]], value, cash
    return out


def from_backtest(
    result: BacktestResult,
    *,
    run_id: str,
    config: dict[str, Any],
    start_time: str,
    end_time: str,
    status: str | None = None,
) -> RunResults:
    """The results of a finished (or stopped) backtest."""
    head = make_head(
        run_id=run_id,
        config=config,
        status=status or ("completed" if result.completed else "stopped"),
        start_time=start_time,
        end_time=end_time,
        symbols=result.symbols,
        initial_cash=result.settings.initial_cash,
        positions=[
            {
                "symbol": p.symbol,
                "size": p.size,
                "entry_price": p.entry_price,
                "market_price": p.market_price,
                "value": p.value,
                "unrealized_pnl": p.unrealized_pnl,
            }
            for p in result.positions
        ],
        performance_metrics=dict(result.metrics),
        final_value=result.final_value,
    )
    equity = equity_records(result.timestamp, result.equity, result.cash)
    return RunResults(head, equity, order_records(result.orders, result.timestamp))


# Paging ------------------------------------------------------------------------------------------------------


class EquityThinner:
    """Thins a curve fed in consecutive chunks to at most `max_points`: first, last, each bucket's min and max.

    Keeping every bucket's extremes means the global peak and trough (and so the drawdown a chart shows) survive
    any amount of thinning. Memory is one chunk plus the kept points, however long the curve.
    """

    def __init__(self, total: int, max_points: int) -> None:
        self.total = total
        self.keep_all = total <= max_points or total <= 2
        self._parts: list[np.ndarray] = []
        if self.keep_all:
            return
        buckets = max(1, (max_points - 2) // 2)
        self._edges = np.linspace(1, total - 1, buckets + 1).astype(np.int64)
        self._min = np.zeros(buckets, EQUITY_DTYPE)
        self._max = np.zeros(buckets, EQUITY_DTYPE)
        self._min_at = np.full(buckets, -1, np.int64)
        self._max_at = np.full(buckets, -1, np.int64)
        self._ends: dict[int, np.ndarray] = {}

    def feed(self, first_row: int, rows: np.ndarray) -> None:
        """Take the chunk of points that starts at index `first_row`."""
        if self.keep_all:
            self._parts.append(rows)
            return
        n = rows.shape[0]
        for end in (0, self.total - 1):
            if first_row <= end < first_row + n:
                self._ends[end] = rows[end - first_row : end - first_row + 1]
        # Buckets cover [1, total - 1): the part of this chunk inside them, as a slice (no copy).
        lo, hi = max(first_row, 1), min(first_row + n, self.total - 1)
        if hi <= lo:
            return
        values = rows["value"][lo - first_row : hi - first_row]
        # Bucket k is [edges[k], edges[k + 1]); empty ones (equal edges) are skipped, as np.linspace makes some.
        k0 = int(np.searchsorted(self._edges, lo, side="right")) - 1
        k1 = int(np.searchsorted(self._edges, hi - 1, side="right")) - 1
        b = np.arange(k0, k1 + 1)
        starts = np.maximum(self._edges[b], lo) - lo
        keep = np.r_[starts[1:] > starts[:-1], True]
        b, starts = b[keep], starts[keep]
        lengths = np.diff(np.r_[starts, values.shape[0]])
        segment = np.repeat(np.arange(starts.shape[0]), lengths)
        # Reduce each bucket, then take the first point equal to its extreme (np.argmin/np.argmax's choice on
        # ties): O(n), where sorting was several times slower on 1M points.
        for reduce, best, best_at, better in (
            (np.fmin, self._min, self._min_at, np.less),
            (np.fmax, self._max, self._max_at, np.greater),
        ):
            extreme = reduce.reduceat(values, starts)
            hits = np.flatnonzero(values == extreme[segment])
            hit_segment = segment[hits]
            first = hits[np.r_[True, hit_segment[1:] != hit_segment[:-1]]] if hits.size else hits
            found = np.zeros(starts.shape[0], dtype=bool)
            at = np.zeros(starts.shape[0], dtype=np.int64)
            found[segment[first]], at[segment[first]] = True, first
            # A bucket spanning two chunks keeps the earlier extreme on ties: only strictly better replaces.
            take = found & ((best_at[b] < 0) | better(values[at], best["value"][b]))
            best[b[take]] = rows[lo - first_row + at[take]]
            best_at[b[take]] = lo + at[take]

    def result(self) -> np.ndarray:
        """The kept points in curve order."""
        if self.keep_all:
            return np.concatenate(self._parts) if self._parts else np.empty(0, EQUITY_DTYPE)
        at = np.concatenate([self._min_at, self._max_at, np.fromiter(self._ends, np.int64, len(self._ends))])
        rows = np.concatenate([self._min, self._max, *self._ends.values()])
        valid = at >= 0
        at, rows = at[valid], rows[valid]
        _, first = np.unique(at, return_index=True)
        return rows[first]


def page_of(results: RunResults, *, max_points: int | None, limit: int | None, offset: int) -> ResultsPage:
    """A page of results held in memory; None for max_points or limit means everything."""
    equity, orders = results.equity, results.orders
    thinner = EquityThinner(equity.shape[0], max_points or max(equity.shape[0], 2))
    thinner.feed(0, equity)
    fills = orders[orders["status"] == STATUS_FILLED]
    end = None if limit is None else offset + limit
    return ResultsPage(
        head=results.head,
        equity=thinner.result(),
        orders=orders[offset:end],
        trades=fills[offset:end],
        offset=offset,
        limit=limit if limit is not None else max(orders.shape[0], 1),
        equity_total=equity.shape[0],
        orders_total=orders.shape[0],
        trades_total=fills.shape[0],
        paged=max_points is not None or limit is not None,
    )


def full_document(results: RunResults) -> dict[str, Any]:
    """The whole results document (the CLI's `--json`)."""
    return page_of(results, max_points=None, limit=None, offset=0).document()


# Rendering ------------------------------------------------------------------------------------------------------


def iso_times(ts_ms: np.ndarray) -> list[str]:
    """Vectorised ISO 8601 formatting of UTC milliseconds (`2024-01-01T00:00:00Z`)."""
    if ts_ms.size == 0:
        return []
    unit = "ms" if np.any(ts_ms % 1000) else "s"
    stamps = ts_ms.astype("datetime64[ms]")
    out: list[str] = []
    for start in range(0, stamps.shape[0], ISO_CHUNK):
        text = np.datetime_as_string(stamps[start : start + ISO_CHUNK], unit=unit)  # type: ignore[call-overload]
        out.extend(s + "Z" for s in text.tolist())
    return out


def _floats(values: np.ndarray) -> list[float | None]:
    """Floats with NaN and ±inf as None (JSON has neither)."""
    out: list[float | None] = values.tolist()
    if not np.isfinite(values).all():
        out = [v if v is not None and math.isfinite(v) else None for v in out]
    return out


def equity_dicts(rows: np.ndarray, initial_cash: float) -> list[dict[str, Any]]:
    """Equity points as the document's dicts (pnl against the initial cash)."""
    values, cash = _floats(rows["value"]), _floats(rows["cash"])
    pnl = _floats(rows["value"] - initial_cash)
    return [
        {"timestamp": t, "value": v, "cash": c, "pnl": p}
        for t, v, c, p in zip(iso_times(rows["ts"]), values, cash, pnl, strict=True)
    ]


def order_dicts(rows: np.ndarray, symbols: tuple[str, ...]) -> list[dict[str, Any]]:
    """Orders as the document's dicts."""
    if rows.shape[0] == 0:
        return []
    created = iso_times(rows["created"])
    done = iso_times(np.clip(rows["ts"], 0, None))
    filled = rows["status"] == STATUS_FILLED
    out = []
    for k, (size, price, trigger, fee) in enumerate(
        zip(_floats(rows["size"]), _floats(rows["price"]), _floats(rows["trigger"]), _floats(rows["fee"]), strict=True)
    ):
        row = rows[k]
        out.append(
            {
                "id": int(row["id"]),
                "created_at": created[k],
                "timestamp": done[k] if row["ts"] >= 0 else None,
                "symbol": _name(symbols, int(row["symbol"])),
                "side": "buy" if row["side"] > 0 else "sell",
                "type": TYPE_NAMES[int(row["type"])],
                "status": STATUS_NAMES[int(row["status"])],
                "size": size,
                "price": price if filled[k] else None,
                "trigger_price": trigger,
                "commission": fee,
                "reason": REASON_NAMES[int(row["reason"])],
            }
        )
    return out


def trade_dicts(rows: np.ndarray, symbols: tuple[str, ...], *, first_id: int) -> list[dict[str, Any]]:
    """Fills (filled orders) as the document's trade dicts, numbered from `first_id`."""
    if rows.shape[0] == 0:
        return []
    times = iso_times(rows["ts"])
    columns = zip(
        _floats(rows["size"]),
        _floats(rows["price"]),
        _floats(rows["size"] * rows["price"]),
        _floats(rows["fee"]),
        _floats(rows["pnl"]),
        _floats(rows["ret"]),
        strict=True,
    )
    out = []
    for k, (size, price, value, fee, pnl, ret) in enumerate(columns):
        row = rows[k]
        out.append(
            {
                "id": first_id + k,
                "order_id": int(row["id"]),
                "timestamp": times[k],
                "symbol": _name(symbols, int(row["symbol"])),
                "side": "buy" if row["side"] > 0 else "sell",
                "size": size,
                "price": price,
                "value": value,
                "commission": fee,
                "pnl": pnl,
                "return_pct": ret,
                "reason": REASON_NAMES[int(row["reason"])],
            }
        )
    return out


def _name(symbols: tuple[str, ...], index: int) -> str:
    return symbols[index] if 0 <= index < len(symbols) else f"#{index}"


def json_safe(value: Any) -> Any:
    """Copy of a JSON-like value with NaN and ±inf floats replaced by None and numpy values made plain."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, int | str | bool):
        return json_safe(value.tolist())
    return value


def _dumps(value: Any) -> str:
    """Compact JSON; non-finite floats become null (only values that contain one pay for the extra pass)."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (ValueError, TypeError):
        return json.dumps(json_safe(value), allow_nan=False, separators=(",", ":"), default=str)


def json_pieces(document: Mapping[str, Any], *, consume: bool = False) -> Iterator[str]:
    """The document's JSON text in ASCII pieces; long top-level lists are encoded `JSON_CHUNK` items at a time.

    With `consume`, each encoded chunk of a long list is replaced by None in place (the document is spent).
    """
    yield "{"
    for i, (key, value) in enumerate(document.items()):
        yield ("," if i else "") + json.dumps(str(key)) + ":"
        if isinstance(value, list) and len(value) > JSON_CHUNK:
            yield "["
            for start in range(0, len(value), JSON_CHUNK):
                # Strip each chunk's brackets so the chunks join into one array.
                yield ("," if start else "") + _dumps(value[start : start + JSON_CHUNK])[1:-1]
                if consume:
                    end = min(start + JSON_CHUNK, len(value))
                    value[start:end] = [None] * (end - start)
            yield "]"
        else:
            yield _dumps(value)
    yield "}"


# Legacy documents ---------------------------------------------------------------------------------------------


def _ms(values: list[Any]) -> np.ndarray:
    """ISO 8601 strings (or None) as UTC ms; None becomes -1."""
    text = [v.rstrip("Z") if isinstance(v, str) else "NaT" for v in values]
    stamps = np.array(text, dtype="datetime64[ms]").astype(np.int64)
    stamps[np.array([not isinstance(v, str) for v in values], dtype=bool)] = -1
    return stamps


def _nan(values: list[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _codes(values: list[Any], names: tuple[str, ...]) -> np.ndarray:
    lookup = {n: i for i, n in enumerate(names)}
    return np.array([lookup.get(str(v), 0) for v in values], dtype=np.int64)


def from_document(doc: Mapping[str, Any]) -> RunResults:
    """Columnar results of a whole results document (runs stored before the columnar store, or SDK input)."""
    curve = list(doc.get("equity_curve") or [])
    equity = np.empty(len(curve), EQUITY_DTYPE)
    if curve:
        equity["ts"] = _ms([p.get("timestamp") for p in curve])
        equity["value"] = _nan([p.get("value") for p in curve])
        equity["cash"] = _nan([p.get("cash") for p in curve])
    orders_in = list(doc.get("orders") or [])
    symbols: list[str] = []
    for o in orders_in:
        if o.get("symbol") not in symbols:
            symbols.append(str(o.get("symbol")))
    config = doc.get("config") or {}
    for s in config.get("symbols") or [] if isinstance(config, Mapping) else []:
        if s not in symbols:
            symbols.append(str(s))
    orders = np.empty(len(orders_in), ORDER_DTYPE)
    if orders_in:
        # Legacy orders carry no pnl; fills do: take it from the trade of each filled order.
        by_order = {t.get("order_id"): t for t in doc.get("trades") or []}
        col = lambda name: [o.get(name) for o in orders_in]  # noqa: E731
        orders["id"] = [int(v or 0) for v in col("id")]
        orders["created"] = _ms(col("created_at"))
        orders["ts"] = _ms(col("timestamp"))
        orders["symbol"] = [symbols.index(str(v)) for v in col("symbol")]
        orders["side"] = [1 if v == "buy" else -1 for v in col("side")]
        orders["type"] = _codes(col("type"), TYPE_NAMES)
        orders["status"] = _codes(col("status"), STATUS_NAMES)
        orders["reason"] = _codes(col("reason"), REASON_NAMES)
        orders["size"] = _nan(col("size"))
        orders["price"] = _nan(col("price"))
        orders["trigger"] = _nan(col("trigger_price"))
        orders["fee"] = _nan([v or 0.0 for v in col("commission")])
        orders["pnl"] = _nan([(by_order.get(o.get("id")) or {}).get("pnl") for o in orders_in])
        orders["ret"] = _nan([(by_order.get(o.get("id")) or {}).get("return_pct") for o in orders_in])
    initial = config.get("initial_cash") if isinstance(config, Mapping) else None
    if initial is None and curve:
        first = curve[0]
        if first.get("value") is not None and first.get("pnl") is not None:
            initial = float(first["value"]) - float(first["pnl"])
    head = make_head(
        run_id=doc.get("run_id"),
        config=dict(config) if isinstance(config, Mapping) else None,
        status=str(doc.get("status") or "completed"),
        start_time=doc.get("start_time"),
        end_time=doc.get("end_time"),
        symbols=symbols,
        initial_cash=float(initial) if initial is not None else 0.0,
        positions=list(doc.get("positions") or []),
        performance_metrics=dict(doc.get("performance_metrics") or {}),
        final_value=doc.get("final_value"),
        error=doc.get("error"),
    )
    return RunResults(json_safe(head), equity, orders)
