"""`/runs/{id}/candles`, `/runs/{id}/roundtrips` and `/runs/{id}/breakdowns`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from cracktrader.web.analysis import service
from cracktrader.web.analysis.schemas import Breakdowns, RoundTripList, RunCandles
from cracktrader.web.deps import AppSettingsDep, RunsDep, RunStoreDep

router = APIRouter()

# A chart shows a few thousand candles; 20,000 bounds a response to about 1.5 MB.
MAX_POINTS_CAP = 20_000
DEFAULT_POINTS = 5_000
# A chart's whole range shows a few hundred trades legibly; 2,000 keeps a long run's response near 1 MB.
DEFAULT_MARKERS = 2_000
Time = Annotated[
    str | None,
    Query(max_length=40, description="ISO 8601 (2024-01-01T00:00:00Z) or epoch milliseconds"),
]
Symbol = Annotated[str | None, Query(max_length=64, description="One of the run's symbols; default its first")]
SortColumn = Literal[
    "entry_time", "exit_time", "symbol", "size", "entry_price", "exit_price", "pnl", "pnl_pct", "duration", "fees"
]


@router.get(
    "/runs/{run_id}/candles",
    response_model=RunCandles,
    tags=["history"],
    responses={404: {"description": "No such run (NOT_FOUND), or symbol not in it (SYMBOL_NOT_IN_RUN)"}},
)
async def get_run_candles(
    run_id: str,
    runs: RunsDep,
    store: RunStoreDep,
    settings: AppSettingsDep,
    symbol: Symbol = None,
    start: Time = None,
    end: Time = None,
    max_points: Annotated[int, Query(ge=2, le=MAX_POINTS_CAP, description="Candles at most (bucketed above)")] = (
        DEFAULT_POINTS
    ),
    max_markers: Annotated[int, Query(ge=0, le=MAX_POINTS_CAP, description="Round trips at most")] = DEFAULT_MARKERS,
) -> dict[str, Any]:
    """A run's candles of one symbol with its round trips as markers and the strategy's plotted indicators.

    `start`/`end` select a range of the run (clipped to it); more than `max_points` bars are merged into OHLC
    buckets of `bucket_bars` bars each, so a zoomed-in range comes at full detail.
    """
    return await service.run_candles(
        runs=runs,
        store=store,
        run_id=run_id,
        symbol=symbol,
        start=start,
        end=end,
        max_points=max_points,
        max_markers=max_markers,
        settings=settings,
    )


@router.get("/runs/{run_id}/roundtrips", response_model=RoundTripList, tags=["history"])
async def get_run_round_trips(
    run_id: str,
    runs: RunsDep,
    store: RunStoreDep,
    sort: Annotated[SortColumn, Query(description="Column to sort by")] = "exit_time",
    order: Annotated[Literal["asc", "desc"], Query()] = "asc",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=100_000_000)] = 0,
) -> dict[str, Any]:
    """A run's round-trip trades (entry, exit, size, pnl, pnl %, duration, fees), sorted and paged."""
    return await service.run_round_trips(
        runs=runs, store=store, run_id=run_id, sort=sort, order=order, limit=limit, offset=offset
    )


@router.get("/runs/{run_id}/breakdowns", response_model=Breakdowns, tags=["history"])
async def get_run_breakdowns(run_id: str, runs: RunsDep, store: RunStoreDep) -> dict[str, Any]:
    """Per-symbol round-trip figures (trades, pnl, return, win rate) and the return of each calendar month."""
    return await service.run_breakdowns(runs=runs, store=store, run_id=run_id)
