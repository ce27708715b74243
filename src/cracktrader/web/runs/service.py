"""Results slicing, CSV export and history formatting for the runs endpoints."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import numpy as np

from cracktrader.runs.downsample import extreme_preserving_indices

TRADE_COLUMNS = (
    "id",
    "order_id",
    "timestamp",
    "symbol",
    "side",
    "size",
    "price",
    "value",
    "commission",
    "pnl",
    "return_pct",
    "reason",
)
EQUITY_COLUMNS = ("timestamp", "value", "cash", "pnl")


def slice_document(doc: dict[str, Any], *, max_points: int, limit: int, offset: int) -> dict[str, Any]:
    """A copy with the equity curve thinned to `max_points` (extremes kept) and trades/orders paginated."""
    curve = doc.get("equity_curve") or []
    if len(curve) > max_points:
        values = np.fromiter((p["value"] for p in curve), dtype=np.float64, count=len(curve))
        thinned = [curve[i] for i in extreme_preserving_indices(values, max_points).tolist()]
    else:
        thinned = curve
    trades = doc.get("trades") or []
    orders = doc.get("orders") or []
    out = dict(doc)
    out["equity_curve"] = thinned
    out["trades"] = trades[offset : offset + limit]
    out["orders"] = orders[offset : offset + limit]
    out["page"] = {
        "trades": {"offset": offset, "limit": limit, "total": len(trades)},
        "orders": {"offset": offset, "limit": limit, "total": len(orders)},
        "equity_points": len(thinned),
        "equity_points_total": len(curve),
    }
    return out


def csv_rows(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> Iterator[str]:
    """Stream rows as CSV text chunks (header first)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for k, row in enumerate(rows):
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
        if k % 5000 == 4999:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def summary_to_dict(summary: Any) -> dict[str, Any]:
    """A run-store summary as the API's RunSummaryOut."""

    def iso(value: Any) -> str | None:
        if value is None:
            return None
        return str(value.isoformat().replace("+00:00", "Z"))

    return {
        "run_id": summary.id,
        "mode": summary.mode,
        "status": summary.status,
        "strategy_name": summary.strategy_name,
        "symbols": list(summary.symbols),
        "timeframe": summary.timeframe,
        "exchange": summary.exchange,
        "config": summary.config,
        "created_at": iso(summary.created_at),
        "started_at": iso(summary.started_at),
        "ended_at": iso(summary.ended_at),
        "error": summary.error,
        "final_value": summary.final_value,
        "total_return": summary.total_return,
        "metrics": summary.metrics,
    }
