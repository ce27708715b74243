"""Results slicing, CSV export and history formatting for the runs endpoints."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
from fastapi import Response

from cracktrader.engine.records import STATUS_FILLED
from cracktrader.errors import CracktraderError
from cracktrader.runs.document import now_iso
from cracktrader.runs.errors import NoActiveRunError, RunNotFoundError
from cracktrader.runs.events import STATUS_UPDATE, Event
from cracktrader.runs.results import (
    HEAD_FORMAT,
    ResultsPage,
    RunResults,
    equity_dicts,
    from_document,
    order_dicts,
    page_of,
    trade_dicts,
)
from cracktrader.runs.sanitize import redact
from cracktrader.runs.state import FINISHED
from cracktrader.web.runs.encoder import PageEncoder

# Rows per CSV piece of a run held in memory (stored runs stream in their stored chunks).
EXPORT_CHUNK = 65_536

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


async def results_page(
    manager: Any, store: Any, run_id: str | None, *, max_points: int | None, limit: int | None, offset: int
) -> ResultsPage:
    """A page of a run's results (the current or last run when `run_id` is None), from memory or the store."""
    if run_id is None:
        run_id = manager.results_run_id()
        if run_id is None and store is not None:
            runs, _ = await store.list(limit=1, mode="backtest")
            run_id = runs[0].id if runs else None
        if run_id is None:
            raise RunNotFoundError("No results yet: start a backtest with POST /api/v1/run/backtest")
    results = manager.memory_results(run_id)
    if results is not None:
        return await asyncio.to_thread(page_of, results, max_points=max_points, limit=limit, offset=offset)
    page = None
    if store is not None:
        page = await store.read_page(run_id, max_points=max_points, limit=limit, offset=offset)
    if page is None:
        await missing_results(store, run_id)
    assert page is not None
    return page


async def missing_results(store: Any, run_id: str) -> None:
    """Raise the 404 that says whether the run does not exist or has no results."""
    summary = await store.get(run_id) if store is not None else None
    if summary is None:
        raise RunNotFoundError(f"No run with id {run_id!r}", details={"run_id": run_id})
    raise RunNotFoundError(
        f"Run {run_id} has no results (status: {summary.status})",
        details={"run_id": run_id, "status": summary.status},
    )


async def page_response(page: ResultsPage, encoder: PageEncoder) -> Response:
    """The page as a JSON response, encoded off the event loop."""
    return Response(await encoder.encode(page), media_type="application/json")


async def export_chunks(manager: Any, store: Any, run_id: str, kind: str) -> AsyncIterator[np.ndarray]:
    """A run's equity points or orders, a chunk at a time, from memory or the store."""
    results = manager.memory_results(run_id)
    if results is not None:
        rows = results.equity if kind == "equity" else results.orders
        for start in range(0, rows.shape[0], EXPORT_CHUNK):
            yield rows[start : start + EXPORT_CHUNK]
        return
    if store is None or await store.get(run_id) is None:
        raise RunNotFoundError(f"No run with id {run_id!r}", details={"run_id": run_id})
    async for rows in store.iter_series(run_id, kind):
        yield rows


async def export_head(manager: Any, store: Any, run_id: str) -> dict[str, Any]:
    """The results head an export needs (symbols, initial cash); 404 when the run or its results are missing."""
    results = manager.memory_results(run_id)
    if results is not None:
        return results.head
    head = await store.read_head(run_id) if store is not None and await store.get(run_id) is not None else None
    if head is None:
        await missing_results(store, run_id)
    assert head is not None
    if head.get("format") != HEAD_FORMAT:
        head = (await asyncio.to_thread(from_document, head)).head
    return head


async def csv_stream(chunks: AsyncIterator[np.ndarray], kind: str, head: dict[str, Any]) -> AsyncIterator[str]:
    """CSV text of an export, header first, one stored chunk at a time (formatted off the event loop)."""
    columns = TRADE_COLUMNS if kind == "trades" else EQUITY_COLUMNS
    symbols = tuple(head.get("symbols") or ())
    initial = float(head.get("initial_cash") or 0.0)
    yield ",".join(columns) + "\n"
    next_id = 1
    async for rows in chunks:
        if kind == "trades":
            fills = rows[rows["status"] == STATUS_FILLED]
            text = await asyncio.to_thread(_trades_csv, fills, symbols, next_id, columns)
            next_id += int(fills.shape[0])
        else:
            text = await asyncio.to_thread(_equity_csv, rows, initial, columns)
        if text:
            yield text


def _trades_csv(fills: np.ndarray, symbols: tuple[str, ...], first_id: int, columns: tuple[str, ...]) -> str:
    return _csv_text(trade_dicts(fills, symbols, first_id=first_id), columns)


def _equity_csv(rows: np.ndarray, initial: float, columns: tuple[str, ...]) -> str:
    return _csv_text(equity_dicts(rows, initial), columns)


def _csv_text(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return buf.getvalue()


def recent_activity(results: RunResults) -> dict[str, Any]:
    """The last 50 orders and fills, a 500-point curve, positions and metrics of finished results."""
    page = page_of(results, max_points=500, limit=50, offset=max(0, results.n_fills - 50))
    doc = page.document()
    symbols = tuple(results.head.get("symbols") or ())
    return {
        "recent_orders": order_dicts(results.orders[-50:], symbols),
        "recent_trades": doc["trades"],
        "positions": doc["positions"],
        "equity_curve": doc["equity_curve"],
        "performance_metrics": doc["performance_metrics"],
    }


def _iso(value: Any) -> str | None:
    """A stored UTC datetime as the API writes times (`...Z`)."""
    if value is None:
        return None
    return str(value.isoformat().replace("+00:00", "Z"))


def summary_to_dict(summary: Any) -> dict[str, Any]:
    """A run-store summary as the API's RunSummaryOut."""
    return {
        "run_id": summary.id,
        "mode": summary.mode,
        "status": summary.status,
        "strategy_name": summary.strategy_name,
        "symbols": list(summary.symbols),
        "timeframe": summary.timeframe,
        "exchange": summary.exchange,
        # Rows written before the allowlist existed may hold secrets or megabytes: serve them as stored today.
        "config": redact(summary.config or {}),
        "created_at": _iso(summary.created_at),
        "started_at": _iso(summary.started_at),
        "ended_at": _iso(summary.ended_at),
        "error": summary.error,
        "final_value": summary.final_value,
        "total_return": summary.total_return,
        "metrics": summary.metrics,
        "rerun_of": getattr(summary, "rerun_of", None),
    }


def is_active(run: Any) -> bool:
    """Whether a backtest or session of the registry is still starting or running."""
    return bool(run.state.active if hasattr(run, "state") else run.active)


def idle_detail(status: dict[str, Any]) -> dict[str, Any]:
    """`/status/detailed` of an idle slot."""
    return {
        **status,
        "recent_orders": [],
        "recent_trades": [],
        "positions": [],
        "equity_curve": [],
        "performance_metrics": {},
    }


async def detailed(registry: Any, run: Any) -> dict[str, Any]:
    """`/status/detailed` of a backtest or a session (without the health part)."""
    if not hasattr(run, "state"):  # a session: its snapshot, and its activity so far from its results
        snapshot = run.snapshot()
        extra = await asyncio.to_thread(recent_activity, run.current_results())
        # Positions as the results document has them (with value and unrealized pnl).
        return {**extra, **snapshot, "positions": extra["positions"]}
    st = run.state
    results = registry.memory_results(run.run_id) if not st.active else None
    if results is not None and results.equity.shape[0]:
        extra = await asyncio.to_thread(recent_activity, results)
    else:
        extra = {
            "recent_orders": list(st.recent_orders),
            "recent_trades": list(st.recent_trades),
            "positions": [],
            "equity_curve": [{k: p[k] for k in ("timestamp", "value", "cash", "pnl")} for p in st.equity_samples],
            "performance_metrics": {},
        }
    return {**st.snapshot(), **extra}


async def detailed_anywhere(app: Any, registry: Any, run_id: str, *, owner: int | None) -> dict[str, Any]:
    """`/runs/{id}/status/detailed` of a run this process holds, else of a session another process runs (its
    activity from its stored rows, its status as that process last published it)."""
    try:
        return await detailed(registry, registry.find(run_id, owner=owner))
    except RunNotFoundError:
        stored = await app.state.run_store.get(run_id, user_id=owner)
        if stored is None or stored.mode not in ("paper", "live"):
            raise
    results = await app.state.run_store.session_results(run_id, user_id=owner)
    if results is None:
        raise RunNotFoundError(f"Session {run_id} has stored nothing yet", details={"run_id": run_id})
    status = await _published_status(app, stored)
    extra = await asyncio.to_thread(recent_activity, results)
    return {**extra, **status, "positions": extra["positions"]}


# How long a stop sent to another process waits for the run's final status (a backtest stops within a second, a
# session within two); past it the answer says the stop was sent.
REMOTE_STOP_WAIT_S = {"backtest": 1.5}
REMOTE_SESSION_STOP_WAIT_S = 5.0


async def _cancel_queued(app: Any, stored: Any, *, owner: int | None) -> bool:
    """Stop a run still waiting in the queue, and say so on its stream."""
    queue = app.state.run_queue
    if queue is None or not await queue.cancel_queued(stored.id, datetime.now(UTC), user_id=owner):
        return False
    status = {**stored_status(stored), "status": "stopped", "end_time": now_iso()}
    app.state.manager.bus.publish(Event(STATUS_UPDATE, status, user_id=stored.user_id))
    return True


def stored_status(summary: Any) -> dict[str, Any]:
    """A stored run's row as the status fields (a run no process holds, with no status in the event log)."""
    metrics = summary.metrics or {}
    return {
        "run_id": summary.id,
        "status": summary.status if summary.status in (*FINISHED, "starting") else "running",
        "mode": summary.mode,
        "start_time": _iso(summary.started_at),
        "end_time": _iso(summary.ended_at),
        "runtime_seconds": None,
        "cash": None,
        "value": summary.final_value,
        "pnl": None,
        "trade_count": int(metrics.get("total_trades") or 0),
        "error": summary.error,
    }


async def stored_status_of(app: Any, run_id: str) -> dict[str, Any] | None:
    """A stored run's status fields from its row, None when there is none."""
    stored = await app.state.run_store.get(run_id)
    return None if stored is None else stored_status(stored)


async def status_anywhere(app: Any, registry: Any, run_id: str, *, owner: int | None) -> dict[str, Any]:
    """A run's status from this process, else as the process running it last published it, else its stored row."""
    try:
        status: dict[str, Any] = registry.run_status(run_id, owner=owner)
        return status
    except RunNotFoundError:
        stored = await app.state.run_store.get(run_id, user_id=owner)
        if stored is None:
            raise
    return await _published_status(app, stored)


async def _published_status(app: Any, stored: Any) -> dict[str, Any]:
    """The status the process running a stored run last published, else its row's."""
    event_log = app.state.event_log
    last = await event_log.relay.store.last_of_type(stored.id, STATUS_UPDATE) if event_log is not None else None
    # A run whose server died is marked failed in its row while its last event still says running: the row wins.
    if last is not None and not (stored.status in FINISHED and last.event.payload.get("status") not in FINISHED):
        return dict(last.event.payload)
    return stored_status(stored)


async def stop_anywhere(
    app: Any, registry: Any, run_id: str, *, owner: int | None, flatten: bool = False
) -> dict[str, Any]:
    """Stop a run held by this process, or ask the process that holds it (409 NO_ACTIVE_RUN once it ended)."""
    try:
        answer: dict[str, Any] = await registry.stop_run(run_id, owner=owner, flatten=flatten)
        return answer
    except RunNotFoundError:
        stored = await app.state.run_store.get(run_id, user_id=owner)
        commands = app.state.run_commands
        if stored is None or commands is None:
            raise
    if await _cancel_queued(app, stored, owner=owner):
        return {"run_id": run_id, "status": "stopped", "message": "Run stopped before an executor took it"}
    # Its final status is published before its row is saved: either says it ended.
    ended = (await _published_status(app, stored))["status"]
    if ended in FINISHED:
        raise NoActiveRunError(f"Run {run_id} already ended ({ended})", details={"run_id": run_id})
    wait = REMOTE_STOP_WAIT_S.get(stored.mode, REMOTE_SESSION_STOP_WAIT_S)
    final = await commands.stop(run_id, flatten=flatten, timeout_s=wait)
    if final is None:
        return {
            "run_id": run_id,
            "status": "running",
            "message": "Stop sent to the server process running it; watch /runs/{id}/status",
        }
    return {"run_id": run_id, "status": final, "message": f"Run {final} by the server process running it"}


# How long a session control sent to another process waits for its answer.
REMOTE_CALL_WAIT_S = 5.0


class SessionElsewhereError(CracktraderError):
    """Exchange keys sent to a process that does not run the session."""

    code = "SESSION_ELSEWHERE"
    status_code = 409


async def call_anywhere(
    app: Any, run_id: str, *, owner: int | None, call: str, args: dict[str, Any], not_here: Callable[[], Any]
) -> dict[str, Any]:
    """A session control carried out by the process that runs the session; `not_here()` raises the 404 when no
    process does (or the caller may not see it)."""
    stored = await app.state.run_store.get(run_id, user_id=owner)
    commands = app.state.run_commands
    if stored is not None and commands is not None and stored.mode != "backtest" and stored.status not in FINISHED:
        answer = await commands.call(run_id, call, args, timeout_s=REMOTE_CALL_WAIT_S)
        if answer is not None:
            return answer
    not_here()
    raise RunNotFoundError(f"No session with id {run_id!r}", details={"run_id": run_id})


async def refuse_keys_elsewhere(app: Any, run_id: str, *, owner: int | None) -> None:
    """Keys never travel between processes: a resume with keys for a session another process runs is refused."""
    stored = await app.state.run_store.get(run_id, user_id=owner)
    if stored is None or stored.mode == "backtest":
        raise RunNotFoundError(f"No session with id {run_id!r}", details={"run_id": run_id})
    raise SessionElsewhereError(
        f"Session {run_id} runs on another server process, and exchange keys never travel between processes: send "
        "them again (with --workers N the next request may reach the process that runs it), or to that process",
        details={"run_id": run_id},
    )
