"""`/strategies`: seed 004's CRUD of stored strategies, listed after the read-only strategy classes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response, status

from cracktrader.runs.check import CheckDocument, CheckRequest
from cracktrader.web.deps import StrategiesDep
from cracktrader.web.strategies import service
from cracktrader.web.strategies.schemas import MAX_ID, StrategyCreate, StrategyList, StrategyOut, StrategyUpdate

router = APIRouter(prefix="/strategies", tags=["strategies"])

StrategyId = Annotated[int, Path(ge=1, le=MAX_ID, description="A stored strategy's id")]


@router.get("", response_model=StrategyList)
async def list_strategies(
    ctx: StrategiesDep,
    skip: Annotated[int, Query(ge=0, le=1_000_000, description="Entries to skip")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size")] = 100,
    active_only: Annotated[bool, Query(description="Leave out inactive stored strategies")] = False,
    kind: Annotated[Literal["class", "preset"] | None, Query(description="Only classes or only presets")] = None,
) -> dict[str, Any]:
    """Strategy classes (read-only, with parameter schemas), then your stored strategies; load failures listed."""
    return await service.list_strategies(
        store=ctx.store,
        owner_id=ctx.owner_id,
        registry=ctx.registry,
        skip=skip,
        limit=limit,
        active_only=active_only,
        kind=kind,
    )


@router.post("", response_model=StrategyOut, status_code=status.HTTP_201_CREATED)
async def create_strategy(body: StrategyCreate, ctx: StrategiesDep) -> dict[str, Any]:
    """Store a named preset; 409 DUPLICATE_NAME when the name is taken, 422 for parameters its base rejects."""
    return await service.create_strategy(store=ctx.store, owner_id=ctx.owner_id, registry=ctx.registry, body=body)


@router.get("/{strategy_ref}", response_model=StrategyOut)
async def get_strategy(
    ctx: StrategiesDep,
    strategy_ref: Annotated[str, Path(max_length=200, description="A stored strategy's id or a class name")],
) -> dict[str, Any]:
    """One stored strategy by id, or one strategy class by name."""
    return await service.get_strategy(store=ctx.store, owner_id=ctx.owner_id, registry=ctx.registry, ref=strategy_ref)


@router.put("/{strategy_id}", response_model=StrategyOut)
async def update_strategy(strategy_id: StrategyId, body: StrategyUpdate, ctx: StrategiesDep) -> dict[str, Any]:
    """Change a stored strategy; fields left out keep their values."""
    return await service.update_strategy(
        store=ctx.store, owner_id=ctx.owner_id, registry=ctx.registry, strategy_id=strategy_id, body=body
    )


@router.delete("/{strategy_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_strategy(strategy_id: StrategyId, ctx: StrategiesDep) -> Response:
    """Delete a stored strategy (past runs keep their copy of its parameters)."""
    await service.delete_strategy(store=ctx.store, owner_id=ctx.owner_id, strategy_id=strategy_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{strategy_ref}/check", response_model=CheckDocument)
async def check_strategy(
    ctx: StrategiesDep,
    request: Request,
    body: CheckRequest,
    strategy_ref: Annotated[
        str, Path(max_length=200, description="A class name, or a stored strategy's name or id", examples=["SmaCross"])
    ],
) -> CheckDocument:
    """Prove a strategy safe (no look-ahead; its live window decides as the full history), synchronously.

    Up to CRACKTRADER_MAX_CHECK_BARS (200,000) bars per symbol; 422 CHECK_TOO_LARGE beyond. `passed` is false
    when a check failed (the response is still 200: the check itself ran).
    """
    return await service.check_strategy(
        store=ctx.store,
        owner_id=ctx.owner_id,
        registry=ctx.registry,
        ref=strategy_ref,
        body=body,
        settings=request.app.state.settings,
    )
