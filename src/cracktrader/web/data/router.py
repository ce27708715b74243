"""`/candles`, `/exchanges/{exchange}/markets`, `/data/sets` and `/data/downloads`."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from cracktrader.data.timeframes import SUPPORTED_TIMEFRAMES
from cracktrader.web.analysis.service import check_order, parse_tf, parse_time
from cracktrader.web.data import service
from cracktrader.web.data.jobs import DownloadJobs
from cracktrader.web.data.schemas import (
    CandleSetList,
    DownloadJob,
    DownloadRequest,
    MarketList,
    StoredCandles,
)
from cracktrader.web.deps import AppSettingsDep, caller_user_filter, caller_user_id
from cracktrader.web.errors import ApiError

router = APIRouter()

MAX_CANDLES = 20_000
Time = Annotated[str | None, Query(max_length=40, description="ISO 8601 or epoch milliseconds")]
JobId = Annotated[str, Path(min_length=1, max_length=64)]


# How long a read of a job no process here has waits for the process that has it (an unknown id: its 404 after it).
FORWARD_WAIT_S = 1.0


def _jobs(request: Request) -> DownloadJobs:
    jobs: DownloadJobs = request.app.state.downloads
    return jobs


@router.get("/candles", response_model=StoredCandles, tags=["data"])
async def get_candles(
    settings: AppSettingsDep,
    symbol: Annotated[str, Query(min_length=1, max_length=64)],
    exchange: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    timeframe: Annotated[str, Query(min_length=1, max_length=16, description=", ".join(SUPPORTED_TIMEFRAMES))] = "1h",
    start: Time = None,
    end: Time = None,
    limit: Annotated[int, Query(ge=1, le=MAX_CANDLES)] = 1000,
) -> dict[str, Any]:
    """Candles opening in [start, end) from the store (generated for `synthetic`), at most `limit`.

    Nothing is downloaded: 404 DATA_UNAVAILABLE when nothing is stored (start a download job first).
    """
    tf = parse_tf(timeframe)
    start_ms, end_ms = parse_time(start, "start"), parse_time(end, "end")
    check_order(start_ms, end_ms)
    return await service.stored_candles(
        exchange=exchange or settings.default_exchange,
        symbol=symbol,
        tf=tf,
        start=start_ms,
        end=end_ms,
        limit=limit,
        settings=settings,
    )


@router.get("/exchanges/{exchange}/markets", response_model=MarketList, tags=["catalog"])
async def get_markets(
    settings: AppSettingsDep,
    exchange: Annotated[str, Path(min_length=1, max_length=64)],
    q: Annotated[str | None, Query(max_length=64, description="Symbol substring, any case")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    """An exchange's markets whose symbol contains `q`; `synthetic` lists examples and takes any BASE/QUOTE."""
    return await service.markets(exchange=exchange, q=q, limit=limit, settings=settings)


@router.get("/data/sets", response_model=CandleSetList, tags=["data"])
async def list_candle_sets(
    settings: AppSettingsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    """The stored candle sets with their ranges, sizes and gaps (count, missing bars, the widest few)."""
    return await service.candle_sets(limit=limit, offset=offset, settings=settings)


@router.post(
    "/data/downloads",
    response_model=DownloadJob,
    status_code=202,
    tags=["data"],
    responses={409: {"description": "TOO_MANY_DOWNLOADS"}, 422: {"description": "DOWNLOAD_TOO_LARGE, ..."}},
)
async def start_download(body: DownloadRequest, request: Request, settings: AppSettingsDep) -> dict[str, Any]:
    """Download what the store lacks of a range, as a job (202 with its id).

    Its progress comes as `download_progress` events on `WS /ws/status` (or poll the job).
    """
    tf = parse_tf(body.timeframe)
    exchange = service.known_exchange(body.exchange)
    start = parse_time(body.start, "start")
    end = parse_time(body.end, "end")
    assert start is not None  # required by the model
    end = end if end is not None else tf.floor(int(time.time() * 1000))
    check_order(start, end)
    job = _jobs(request).submit(
        owner=caller_user_filter(request), exchange=exchange, symbol=body.symbol.strip().upper(), tf=tf,
        start=start, end=end, user_id=caller_user_id(request),
    )  # fmt: skip
    return job.document()


async def _elsewhere(request: Request, job_id: str, call: str, missing: ApiError) -> dict[str, Any]:
    """A job another server process runs, read or cancelled there (404 when no process has it)."""
    commands = request.app.state.run_commands
    if commands is None or _jobs(request).holds(job_id):  # here, and not the caller's
        raise missing
    args = {"owner": caller_user_filter(request)}
    answer = await commands.call(job_id, call, args, timeout_s=FORWARD_WAIT_S)
    if answer is None:
        raise missing
    return answer


@router.get("/data/downloads/{job_id}", response_model=DownloadJob, tags=["data"])
async def get_download(job_id: JobId, request: Request) -> dict[str, Any]:
    """A download job: status, progress (done, total, eta_s), and the stored set when completed; a job another
    server process runs is read there."""
    try:
        return _jobs(request).get(job_id, caller_user_filter(request)).document()
    except ApiError as missing:
        return await _elsewhere(request, job_id, "download_get", missing)


@router.delete("/data/downloads/{job_id}", response_model=DownloadJob, tags=["data"])
async def cancel_download(job_id: JobId, request: Request) -> dict[str, Any]:
    """Cancel a download job; it stops after the chunk it is fetching (what it stored stays stored)."""
    try:
        return _jobs(request).cancel(job_id, caller_user_filter(request)).document()
    except ApiError as missing:
        return await _elsewhere(request, job_id, "download_cancel", missing)
