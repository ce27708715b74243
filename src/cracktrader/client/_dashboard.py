"""Request builders of the dashboard's endpoints, shared by the blocking and the asyncio client."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cracktrader.client._common import Call, _path, model
from cracktrader.client.dashboard import (
    Breakdowns,
    CandleSetList,
    DownloadJob,
    LogTail,
    MarketList,
    RoundTripList,
    RunCandles,
    SessionCandles,
    StoredCandles,
)

TimeArg = str | int | datetime | None


def _time(value: TimeArg) -> str | int | None:
    """A time query value: ISO 8601 text, epoch ms, or a datetime (naive means UTC)."""
    if isinstance(value, datetime):
        return value.isoformat() if value.tzinfo else value.isoformat() + "Z"
    return value


def _params(**values: Any) -> dict[str, Any]:
    return {k: _time(v) for k, v in values.items() if v is not None}


def run_candles(
    run_id: str, symbol: str | None, start: TimeArg, end: TimeArg, max_points: int | None, max_markers: int | None
) -> Call[RunCandles]:
    """`GET /runs/{id}/candles`."""
    params = _params(symbol=symbol, start=start, end=end, max_points=max_points, max_markers=max_markers)
    return Call("GET", _path("/runs/{}/candles", run_id), model(RunCandles), params=params)


def recent_candles(run_id: str, symbol: str | None, limit: int | None) -> Call[SessionCandles]:
    """`GET /runs/{id}/recent-candles`."""
    params = _params(symbol=symbol, limit=limit)
    return Call("GET", _path("/runs/{}/recent-candles", run_id), model(SessionCandles), params=params)


def round_trips(run_id: str, sort: str, order: str, limit: int, offset: int) -> Call[RoundTripList]:
    """`GET /runs/{id}/roundtrips`."""
    params = _params(sort=sort, order=order, limit=limit, offset=offset)
    return Call("GET", _path("/runs/{}/roundtrips", run_id), model(RoundTripList), params=params)


def breakdowns(run_id: str) -> Call[Breakdowns]:
    """`GET /runs/{id}/breakdowns`."""
    return Call("GET", _path("/runs/{}/breakdowns", run_id), model(Breakdowns))


def candles(
    symbol: str, exchange: str | None, timeframe: str, start: TimeArg, end: TimeArg, limit: int
) -> Call[StoredCandles]:
    """`GET /candles`."""
    params = _params(symbol=symbol, exchange=exchange, timeframe=timeframe, start=start, end=end, limit=limit)
    return Call("GET", _path("/candles"), model(StoredCandles), params=params)


def markets(exchange: str, q: str | None, limit: int) -> Call[MarketList]:
    """`GET /exchanges/{exchange}/markets`."""
    return Call("GET", _path("/exchanges/{}/markets", exchange), model(MarketList), params=_params(q=q, limit=limit))


def candle_sets(limit: int, offset: int) -> Call[CandleSetList]:
    """`GET /data/sets`."""
    return Call("GET", _path("/data/sets"), model(CandleSetList), params=_params(limit=limit, offset=offset))


def start_download(exchange: str, symbol: str, timeframe: str, start: TimeArg, end: TimeArg) -> Call[DownloadJob]:
    """`POST /data/downloads` (202)."""
    body = {"exchange": exchange, "symbol": symbol, "timeframe": timeframe, "start": _time(start), "end": _time(end)}
    body = {k: (str(v) if isinstance(v, int) else v) for k, v in body.items() if v is not None}
    return Call("POST", _path("/data/downloads"), model(DownloadJob), json=body)


def download(job_id: str) -> Call[DownloadJob]:
    """`GET /data/downloads/{id}`."""
    return Call("GET", _path("/data/downloads/{}", job_id), model(DownloadJob))


def cancel_download(job_id: str) -> Call[DownloadJob]:
    """`DELETE /data/downloads/{id}`."""
    return Call("DELETE", _path("/data/downloads/{}", job_id), model(DownloadJob))


def logs(level: str, run_id: str | None, limit: int) -> Call[LogTail]:
    """`GET /logs`."""
    return Call("GET", _path("/logs"), model(LogTail), params=_params(level=level, run_id=run_id, limit=limit))
