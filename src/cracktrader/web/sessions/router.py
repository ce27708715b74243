"""`POST /runs` (paper sessions, several at once), `GET /runs/{id}/status`, `POST /runs/{id}/stop`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request

from cracktrader.auth.principal import Principal
from cracktrader.runs.config import LiveConfig
from cracktrader.runs.sessions import SessionRegistry, cancel_order, close_position, pause, resume
from cracktrader.web.auth.deps import CurrentUser
from cracktrader.web.deps import StrategiesDep
from cracktrader.web.runs.schemas import RunResponse
from cracktrader.web.sessions.schemas import SessionStatus, StopRequest
from cracktrader.web.strategies.service import resolve_run_strategy

router = APIRouter(tags=["sessions"])
NO_FLATTEN = StopRequest()


def get_sessions(request: Request) -> SessionRegistry:
    sessions: SessionRegistry = request.app.state.sessions
    return sessions


SessionsDep = Annotated[SessionRegistry, Depends(get_sessions)]


def _owner(principal: Principal) -> int | None:
    return principal.owner_filter


@router.post(
    "/runs",
    response_model=RunResponse,
    status_code=201,
    responses={
        409: {"description": "The server runs CRACKTRADER_MAX_LIVE_SESSIONS sessions already (SESSION_LIMIT)"},
        501: {"description": "Live trading, ccxt live candles and the quote fill model are not available yet"},
    },
)
async def start_session(
    config: LiveConfig, sessions: SessionsDep, strategies: StrategiesDep, principal: CurrentUser
) -> dict[str, Any]:
    """Start a paper session (it does not occupy the runner of `/run/backtest`); 201 with its `run_id`.

    Candles come from the synthetic exchange live, or from stored candles with `exchange_config.paper.replay`.
    """
    strategy_class, params = await resolve_run_strategy(
        store=strategies.store,
        owner_id=strategies.owner_id,
        registry=strategies.registry,
        name=config.strategy_name,
        params=config.strategy_params,
    )
    resolved = config.model_copy(update={"strategy_class": strategy_class, "strategy_params": params})
    return await sessions.start(resolved, user_id=principal.user_id)


@router.get("/runs/{run_id}/status", response_model=SessionStatus)
async def session_status(run_id: str, sessions: SessionsDep, principal: CurrentUser) -> dict[str, Any]:
    """A session's lifecycle, cash, value, pnl (realized, unrealized, fees), positions, open orders, data lag."""
    return sessions.get(run_id, owner=_owner(principal)).snapshot()


@router.post("/runs/{run_id}/stop", response_model=RunResponse)
async def stop_session(
    run_id: str,
    sessions: SessionsDep,
    principal: CurrentUser,
    # Not `StopRequest | None`: a Body() on a union member makes pydantic warn that its alias has no effect.
    body: Annotated[StopRequest, Body()] = NO_FLATTEN,
) -> dict[str, Any]:
    """Cancel the session's open orders, keep its positions unless `flatten`, save it, end `stopped` (within 2 s).

    A second stop while it stops answers 200; after it ended, 409 NO_ACTIVE_RUN.
    """
    return await sessions.stop(run_id, owner=_owner(principal), flatten=body.flatten)


@router.post("/runs/{run_id}/orders/{order_id}/cancel", response_model=RunResponse)
async def cancel_session_order(
    run_id: str, order_id: int, sessions: SessionsDep, principal: CurrentUser
) -> dict[str, Any]:
    """Cancel one working order; 404 ORDER_NOT_FOUND when it is not open."""
    return cancel_order(sessions.get(run_id, owner=_owner(principal)), order_id)


@router.post("/runs/{run_id}/positions/{symbol:path}/close", response_model=RunResponse)
async def close_session_position(
    run_id: str, symbol: str, sessions: SessionsDep, principal: CurrentUser
) -> dict[str, Any]:
    """Close one position now, at the last close plus slippage (`BTC/USDT` as is in the path); 409 NO_POSITION."""
    return close_position(sessions.get(run_id, owner=_owner(principal)), symbol)


@router.post("/runs/{run_id}/pause", response_model=RunResponse)
async def pause_session(run_id: str, sessions: SessionsDep, principal: CurrentUser) -> dict[str, Any]:
    """Stop new entries; orders that reduce a position still go out."""
    return pause(sessions.get(run_id, owner=_owner(principal)))


@router.post("/runs/{run_id}/resume", response_model=RunResponse)
async def resume_session(run_id: str, sessions: SessionsDep, principal: CurrentUser) -> dict[str, Any]:
    """Allow new entries again; also lifts a daily-loss halt."""
    return resume(sessions.get(run_id, owner=_owner(principal)))
