"""`/walkforwards`: start a walk-forward (or CPCV) of a grid, follow it, read its report, cancel it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from cracktrader.sweeps.walkforward_request import WalkForwardDocument, WalkForwardList, WalkForwardRequest
from cracktrader.web.deps import StrategiesDep, WalkForwardsDep
from cracktrader.web.runs.router import _with_resolved_strategy

router = APIRouter(tags=["walkforwards"])

WalkForwardId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="The walk-forward's id")]


@router.post("/walkforwards", status_code=202, response_model=WalkForwardDocument)
async def start_walkforward(
    body: WalkForwardRequest, walkforwards: WalkForwardsDep, strategies: StrategiesDep
) -> WalkForwardDocument:
    """Accept a walk-forward or CPCV (202): it runs in the server's backtest workers, as a sweep does.

    422 SWEEP_TOO_LARGE over the server's combination limit, INVALID_WINDOWS when the range makes no window;
    409 QUEUE_FULL when as many backtests, sweeps and walk-forwards run and wait as the server admits.
    """
    request = await _with_resolved_strategy(body, strategies)
    return await walkforwards.registry.submit(request, user_id=walkforwards.user_id)


@router.get("/walkforwards", response_model=WalkForwardList)
async def list_walkforwards(
    walkforwards: WalkForwardsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> WalkForwardList:
    """The caller's walk-forwards (an admin's: everyone's), newest first, without their reports."""
    items, total = await walkforwards.registry.page(owner=walkforwards.owner, limit=limit, offset=offset)
    return WalkForwardList(items=items, total=total, limit=limit, offset=offset)


@router.get("/walkforwards/{walkforward_id}", response_model=WalkForwardDocument)
async def get_walkforward(walkforward_id: WalkForwardId, walkforwards: WalkForwardsDep) -> WalkForwardDocument:
    """A walk-forward's status and progress (windows done, total, ETA) and, once completed, its report."""
    return await walkforwards.registry.get(walkforward_id, owner=walkforwards.owner)


@router.delete("/walkforwards/{walkforward_id}", response_model=WalkForwardDocument)
async def cancel_walkforward(walkforward_id: WalkForwardId, walkforwards: WalkForwardsDep) -> WalkForwardDocument:
    """Cancel a queued or running walk-forward: it stops after the sweep chunk in hand; an ended one is unchanged."""
    return await walkforwards.registry.cancel(walkforward_id, owner=walkforwards.owner)
