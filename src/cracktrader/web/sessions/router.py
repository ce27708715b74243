"""`/runs`: several runs at once (backtests in the pool, paper sessions), by id, never in the caller's slot."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response

from cracktrader.db.run_queue import RunQueue
from cracktrader.runs.config import BacktestConfig, LiveConfig
from cracktrader.runs.queued import enqueue_backtest
from cracktrader.runs.sessions import LiveRun, SessionRegistry, cancel_order, close_position, pause, resume
from cracktrader.web.deps import RunQueueDep, RunsDep, RunsView, StrategiesDep
from cracktrader.web.health.service import health_report
from cracktrader.web.idempotency import IdempotencyDep
from cracktrader.web.runs import service
from cracktrader.web.runs.router import _with_resolved_strategy, require_live_scope
from cracktrader.web.runs.schemas import DetailedStatusResponse, RunResponse
from cracktrader.web.sessions.schemas import ResumeRequest, RunRequest, SessionCandles, SessionStatus, StopRequest
from cracktrader.web.sessions.service import recent_candles_anywhere

router = APIRouter(tags=["sessions"])
NO_FLATTEN = StopRequest()
NO_KEYS = ResumeRequest()
# A live chart's history: a few thousand candles, as `/runs/{id}/candles` caps a chart at 20,000.
MAX_RECENT_CANDLES = 5_000


def get_sessions(request: Request) -> SessionRegistry:
    sessions: SessionRegistry = request.app.state.sessions
    return sessions


SessionsDep = Annotated[SessionRegistry, Depends(get_sessions)]


@router.post(
    "/runs",
    response_model=RunResponse,
    status_code=201,
    responses={
        409: {"description": "The server runs CRACKTRADER_MAX_LIVE_SESSIONS sessions already (SESSION_LIMIT)"},
        501: {"description": "Live trading with real orders and the quote fill model are not available yet"},
    },
)
async def start_run(
    body: RunRequest,
    runs: RunsDep,
    strategies: StrategiesDep,
    once: IdempotencyDep,
    response: Response,
    queue: RunQueueDep,
) -> dict[str, Any]:
    """Start a run by id, outside the caller's slot; 201 with its `run_id`.

    `mode: "backtest"` takes `/run/backtest`'s body and waits its turn in the worker pool (`starting`, phase
    `queued`) when CRACKTRADER_MAX_CONCURRENT_BACKTESTS run already. `mode: "paper"` (the default) takes
    `/run/live`'s body and starts a session at once, or answers 409 SESSION_LIMIT. With an `Idempotency-Key`,
    a retry answers the same run. With the run queue on (CRACKTRADER_RUN_QUEUE), a backtest is queued for any
    executor (this server's or a `cracktrader worker`'s); over CRACKTRADER_MAX_RUNS_PER_USER queued and running
    runs it answers 429 TOO_MANY_RUNS.
    """
    dump = body.model_dump(mode="json")
    return await once(
        route="POST /runs", body=dump, response=response, start=lambda: _start(body, runs, strategies, queue)
    )


async def _start(body: RunRequest, runs: RunsDep, strategies: StrategiesDep, queue: RunQueue | None) -> dict[str, Any]:
    registry = runs.registry
    user_id = runs.slot.user_id
    if body.mode == "backtest":
        config = await _with_resolved_strategy(BacktestConfig(**body.model_dump(exclude={"mode"})), strategies)
        if queue is not None:
            run_id = await enqueue_backtest(queue, config, user_id=user_id)
            return {"run_id": run_id, "status": "starting", "message": "Backtest queued; watch /runs/{id}/status"}
        run = await registry.start_backtest(config, user_id=user_id)
        return {"run_id": run.run_id, "status": "starting", "message": "Backtest accepted; watch /runs/{id}/status"}
    assert isinstance(body, LiveConfig)
    require_live_scope(body, runs.principal)
    assert registry.sessions is not None
    return await registry.sessions.start(await _with_resolved_strategy(body, strategies), user_id=user_id)


@router.get("/runs/{run_id}/status", response_model=SessionStatus, response_model_exclude_unset=True)
async def run_status(request: Request, run_id: str, runs: RunsDep) -> dict[str, Any]:
    """A run's lifecycle and progress; a session adds pnl parts, condition, positions, open orders, data lag.

    A run another server process holds answers with the status that process last published."""
    return await service.status_anywhere(request.app, runs.registry, run_id, owner=runs.owner)


@router.get("/runs/{run_id}/status/detailed", response_model=DetailedStatusResponse)
async def run_status_detailed(request: Request, run_id: str, runs: RunsDep) -> dict[str, Any]:
    """`/runs/{id}/status` plus recent orders and trades, positions, equity curve, metrics and health."""
    doc = await service.detailed_anywhere(request.app, runs.registry, run_id, owner=runs.owner)
    health = await health_report(request.app, detailed=True)
    return {**doc, "health": {"status": health["status"], "checks": health["checks"]}}


@router.get(
    "/runs/{run_id}/recent-candles",
    response_model=SessionCandles,
    responses={404: {"description": "No such session (NOT_FOUND), or symbol not in it (SYMBOL_NOT_IN_RUN)"}},
)
async def session_recent_candles(
    request: Request,
    run_id: str,
    runs: RunsDep,
    symbol: Annotated[
        str | None, Query(max_length=64, description="One of the session's symbols; default its first")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_RECENT_CANDLES, description="Candles at most, the latest")] = 500,
) -> dict[str, Any]:
    """A session's latest closed candles of one symbol, as its strategy received them: a chart's history before
    `WS /ws/status?run_id=ID&candles=true` streams the next ones. A session another server process runs answers
    with the candles it stored."""
    return await recent_candles_anywhere(request.app, runs.registry, run_id, symbol, limit, owner=runs.owner)


@router.post("/runs/{run_id}/stop", response_model=RunResponse)
async def stop_run(
    request: Request,
    run_id: str,
    runs: RunsDep,
    # Not `StopRequest | None`: a Body() on a union member makes pydantic warn that its alias has no effect.
    body: Annotated[StopRequest, Body()] = NO_FLATTEN,
) -> dict[str, Any]:
    """Stop a backtest (within a second) or a session (open orders cancelled, positions kept unless `flatten`,
    saved, `stopped` within 2 s).

    A second stop of a session while it stops answers 200; after a run ended, 409 NO_ACTIVE_RUN. A run another
    server process holds is stopped by that process; the answer has its final status once it has one.
    """
    return await service.stop_anywhere(request.app, runs.registry, run_id, owner=runs.owner, flatten=body.flatten)


async def _control(
    request: Request,
    sessions: SessionRegistry,
    runs: RunsView,
    run_id: str,
    call: str,
    args: dict[str, Any],
    here: Callable[[LiveRun], dict[str, Any]],
) -> dict[str, Any]:
    """A session control, carried out here or by the server process that runs the session."""
    if run_id in sessions.runs:
        return here(sessions.get(run_id, owner=runs.owner))
    return await service.call_anywhere(
        request.app, run_id, owner=runs.owner, call=call, args=args, not_here=lambda: sessions.get(run_id)
    )


@router.post("/runs/{run_id}/orders/{order_id}/cancel", response_model=RunResponse)
async def cancel_session_order(
    request: Request, run_id: str, order_id: int, sessions: SessionsDep, runs: RunsDep
) -> dict[str, Any]:
    """Cancel one working order; 404 ORDER_NOT_FOUND when it is not open."""
    args = {"order_id": order_id}
    return await _control(request, sessions, runs, run_id, "cancel_order", args, lambda r: cancel_order(r, order_id))


@router.post("/runs/{run_id}/positions/{symbol:path}/close", response_model=RunResponse)
async def close_session_position(
    request: Request, run_id: str, symbol: str, sessions: SessionsDep, runs: RunsDep
) -> dict[str, Any]:
    """Close one position now, at the last close plus slippage (`BTC/USDT` as is in the path); 409 NO_POSITION."""
    args = {"symbol": symbol}
    return await _control(request, sessions, runs, run_id, "close_position", args, lambda r: close_position(r, symbol))


@router.post("/runs/{run_id}/pause", response_model=RunResponse)
async def pause_session(request: Request, run_id: str, sessions: SessionsDep, runs: RunsDep) -> dict[str, Any]:
    """Stop new entries; orders that reduce a position still go out."""
    return await _control(request, sessions, runs, run_id, "pause", {}, pause)


@router.post("/runs/{run_id}/resume", response_model=RunResponse)
async def resume_session(
    request: Request,
    run_id: str,
    sessions: SessionsDep,
    runs: RunsDep,
    body: Annotated[ResumeRequest, Body()] = NO_KEYS,
) -> dict[str, Any]:
    """Allow new entries again; also lifts a daily-loss halt.

    A live session taken over after a restart waits (`starting`, phase `awaiting_credentials`) for its exchange
    keys, which are never stored: send them here (`apiKey`, `secret`); 409 CREDENTIALS_REQUIRED without them.
    Keys are only taken by the server process that runs the session (they never travel between processes).
    """
    keys = body.credentials()
    if keys and run_id not in sessions.runs:
        await service.refuse_keys_elsewhere(request.app, run_id, owner=runs.owner)
    return await _control(request, sessions, runs, run_id, "resume", {}, lambda r: resume(r, keys))
