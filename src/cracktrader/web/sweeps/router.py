"""`/sweeps`: start a parameter sweep, follow it, page its rows, cancel it, run one of its rows as a backtest."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from cracktrader.sweeps.request import SweepDocument, SweepList, SweepRequest, SweepResultsPage
from cracktrader.web.deps import RunsDep, StrategiesDep, SweepsDep
from cracktrader.web.runs.router import _with_resolved_strategy
from cracktrader.web.runs.schemas import RunResponse

router = APIRouter(tags=["sweeps"])

SweepId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="The sweep's id")]
Limit = Annotated[int, Query(ge=1, le=10_000, description="Rows per page")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="Rows to skip")]


@router.post("/sweeps", status_code=202, response_model=SweepDocument)
async def start_sweep(body: SweepRequest, sweeps: SweepsDep, strategies: StrategiesDep) -> SweepDocument:
    """Accept a sweep (202): it runs in the server's backtest workers, beside backtests and sessions.

    422 SWEEP_TOO_LARGE over the server's combination limit (in the details); 409 QUEUE_FULL when as many
    backtests and sweeps run and wait as the server admits.
    """
    request = await _with_resolved_strategy(body, strategies)
    return await sweeps.registry.submit(request, user_id=sweeps.user_id)


@router.get("/sweeps", response_model=SweepList)
async def list_sweeps(
    sweeps: SweepsDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50, offset: Annotated[int, Query(ge=0)] = 0
) -> SweepList:
    """The caller's sweeps (an admin's: everyone's), newest first."""
    items, total = await sweeps.registry.page(owner=sweeps.owner, limit=limit, offset=offset)
    return SweepList(items=items, total=total, limit=limit, offset=offset)


@router.get("/sweeps/{sweep_id}", response_model=SweepDocument)
async def get_sweep(sweep_id: SweepId, sweeps: SweepsDep) -> SweepDocument:
    """A sweep's status and progress (done, total, ETA), counts and skipped combinations."""
    return await sweeps.registry.get(sweep_id, owner=sweeps.owner)


@router.get("/sweeps/{sweep_id}/results", response_model=SweepResultsPage)
async def sweep_results(
    sweep_id: SweepId,
    sweeps: SweepsDep,
    sort: Annotated[str | None, Query(max_length=64, description="Metric to rank by; default: the sweep's")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> SweepResultsPage:
    """A page of an ended sweep's rows, best first (a cancelled sweep's: those evaluated before it stopped)."""
    return await sweeps.registry.results(sweep_id, owner=sweeps.owner, sort=sort, limit=limit, offset=offset)


@router.delete("/sweeps/{sweep_id}", response_model=SweepDocument)
async def cancel_sweep(sweep_id: SweepId, sweeps: SweepsDep) -> SweepDocument:
    """Cancel a queued or running sweep within 2 s, keeping the rows evaluated so far; an ended one is unchanged."""
    return await sweeps.registry.cancel(sweep_id, owner=sweeps.owner)


@router.post("/sweeps/{sweep_id}/rows/{rank}/backtest", response_model=RunResponse)
async def backtest_sweep_row(
    sweep_id: SweepId,
    rank: Annotated[int, Path(ge=1, le=1_000_000, description="The row's rank by the sweep's sort (1: best)")],
    sweeps: SweepsDep,
    runs: RunsDep,
    strategies: StrategiesDep,
) -> dict[str, Any]:
    """Run one row of a sweep as an ordinary backtest in the caller's runner slot (as POST /run/backtest)."""
    request, row = await sweeps.registry.row(sweep_id, rank, owner=sweeps.owner)
    config = await _with_resolved_strategy(request.backtest_config(row.params), strategies)
    return await runs.slot.start_backtest(config)
