"""Run control (`/run/*`), `/status`, `/results` and run history (`/runs`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from cracktrader.auth.errors import ForbiddenError
from cracktrader.auth.principal import Principal
from cracktrader.runs.config import BacktestConfig, LiveConfig
from cracktrader.runs.errors import RunNotFoundError, RunNotResettableError
from cracktrader.runs.rerun import load_stored_run, rerun_config
from cracktrader.sweeps.request import SweepRequest
from cracktrader.sweeps.walkforward_request import WalkForwardRequest
from cracktrader.web.deps import (
    EncoderDep,
    RunsDep,
    RunStoreDep,
    RunsView,
    StrategiesDep,
    StrategyContext,
    WebSettingsDep,
)
from cracktrader.web.health.service import health_report
from cracktrader.web.idempotency import IdempotencyDep
from cracktrader.web.runs import service
from cracktrader.web.runs.encoder import PageEncoder
from cracktrader.web.runs.schemas import (
    DetailedStatusResponse,
    ResultsResponse,
    RunListResponse,
    RunResponse,
    RunSummaryOut,
    StatusResponse,
)
from cracktrader.web.sessions.schemas import StopRequest
from cracktrader.web.strategies.service import resolve_run_strategy

router = APIRouter()
NO_FLATTEN = StopRequest()
ConfigT = TypeVar("ConfigT", BacktestConfig, LiveConfig, SweepRequest, WalkForwardRequest)

# Bounds keep one response to a few tens of MB; the CSV exports stream everything.
MaxPoints = Annotated[int | None, Query(ge=2, le=200_000, description="Thin the equity curve to this many points")]
Limit = Annotated[int | None, Query(ge=1, le=50_000, description="Trades and orders per page")]
Offset = Annotated[int, Query(ge=0, description="Trades and orders to skip")]


def require_live_scope(config: LiveConfig, principal: Principal | None) -> None:
    """Paper needs `trade` (checked by the router group); real money also needs `live`."""
    if config.mode == "live" and principal is not None and "live" not in principal.scopes:
        raise ForbiddenError("Live trading needs the 'live' scope", details={"required_scope": "live"})


async def _with_resolved_strategy(config: ConfigT, ctx: StrategyContext) -> ConfigT:
    """The config with `strategy_class` and the parameters of the stored strategy it names (if it names one)."""
    strategy_class, params = await resolve_run_strategy(
        store=ctx.store,
        owner_id=ctx.owner_id,
        registry=ctx.registry,
        name=config.strategy_name,
        params=config.strategy_params,
    )
    return config.model_copy(update={"strategy_class": strategy_class, "strategy_params": params})


@router.post("/run/backtest", response_model=RunResponse, tags=["runs"])
async def start_backtest(
    config: BacktestConfig, runs: RunsDep, strategies: StrategiesDep, once: IdempotencyDep, response: Response
) -> dict[str, Any]:
    """Start a backtest in the caller's runner slot; 409 RUN_ALREADY_ACTIVE unless the slot is idle."""

    async def start() -> dict[str, Any]:
        return await runs.slot.start_backtest(await _with_resolved_strategy(config, strategies))

    return await once(route="POST /run/backtest", body=config.model_dump(mode="json"), response=response, start=start)


@router.post(
    "/run/live",
    response_model=RunResponse,
    tags=["runs"],
    responses={501: {"description": "Live trading with real orders is not available yet (mode live)"}},
)
async def start_live(
    config: LiveConfig, runs: RunsDep, strategies: StrategiesDep, once: IdempotencyDep, response: Response
) -> dict[str, Any]:
    """Start a paper session in the caller's runner slot; mode live is validated, recorded and answers 501."""
    require_live_scope(config, runs.principal)

    async def start() -> dict[str, Any]:
        return await runs.slot.start_live(await _with_resolved_strategy(config, strategies))

    return await once(route="POST /run/live", body=config.model_dump(mode="json"), response=response, start=start)


@router.post("/run/stop", response_model=RunResponse, tags=["runs"])
async def stop_run(
    runs: RunsDep,
    # Not `StopRequest | None`: a Body() on a union member makes pydantic warn that its alias has no effect.
    body: Annotated[StopRequest, Body()] = NO_FLATTEN,
) -> dict[str, Any]:
    """Stop the slot's run (a backtest within a second, a session within 2 s, `flatten` closing its positions).

    409 NO_ACTIVE_RUN when none is active.
    """
    return await runs.slot.stop(flatten=body.flatten)


@router.delete("/run/reset", response_model=RunResponse, tags=["runs"])
async def reset_run(runs: RunsDep) -> dict[str, Any]:
    """Return the caller's finished slot to idle; 409 RUN_NOT_RESETTABLE while its run is active."""
    return await runs.slot.reset()


@router.get("/status", response_model=StatusResponse, tags=["status"])
async def get_status(runs: RunsDep) -> Response:
    """Lifecycle, progress, cash, value and pnl of the slot's run (a session adds condition and pnl parts)."""
    # A prebuilt response skips response-model validation: this is the hottest read path.
    return JSONResponse((await runs.loaded_slot()).status())


@router.get("/run/status", response_model=StatusResponse, tags=["status"], deprecated=True)
async def get_status_deprecated(runs: RunsDep) -> Response:
    """Deprecated alias of `/status` (see `/meta` for the sunset date)."""
    return JSONResponse((await runs.loaded_slot()).status())


@router.get("/status/detailed", response_model=DetailedStatusResponse, tags=["status"])
async def get_detailed_status(request: Request, runs: RunsDep) -> dict[str, Any]:
    """`/status` plus recent orders and trades, positions, equity curve, metrics and health."""
    slot = await runs.loaded_slot()
    run = slot.current()
    doc = await service.detailed(runs.registry, run) if run is not None else service.idle_detail(slot.status())
    health = await health_report(request.app, detailed=True)
    return {**doc, "health": {"status": health["status"], "checks": health["checks"]}}


async def _page(
    runs: RunsView,
    store: Any,
    settings: Any,
    encoder: PageEncoder,
    run_id: str | None,
    max_points: int | None,
    limit: int | None,
    offset: int,
) -> Response:
    """The results page with the request's paging, or the server's defaults (which keep it under 2 MB)."""
    page = await service.results_page(
        runs,
        store,
        run_id,
        max_points=max_points or settings.results_default_points,
        limit=limit or settings.results_default_limit,
        offset=offset,
    )
    return await service.page_response(page, encoder)


@router.get("/results", response_model=ResultsResponse, tags=["results"])
async def get_results(
    runs: RunsDep,
    store: RunStoreDep,
    settings: WebSettingsDep,
    encoder: EncoderDep,
    max_points: MaxPoints = None,
    limit: Limit = None,
    offset: Offset = 0,
) -> Response:
    """Results of the current or last run; long lists are sliced (`max_points`, `limit`, `offset`)."""
    await runs.loaded_slot()
    return await _page(runs, store, settings, encoder, None, max_points, limit, offset)


@router.get("/runs", response_model=RunListResponse, tags=["history"])
async def list_runs(
    store: RunStoreDep,
    status: Annotated[Literal["starting", "running", "completed", "failed", "stopped"] | None, Query()] = None,
    mode: Annotated[Literal["backtest", "paper", "live"] | None, Query()] = None,
    strategy: Annotated[str | None, Query(max_length=200)] = None,
    symbol: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Run history, newest first, filterable by status, mode, strategy and symbol."""
    items, total = await store.list(
        status=status,
        mode=mode,
        strategy=strategy,
        symbol=symbol.upper() if symbol else None,
        limit=limit,
        offset=offset,
    )
    return {"items": [service.summary_to_dict(s) for s in items], "total": total, "limit": limit, "offset": offset}


@router.get("/runs/{run_id}", response_model=RunSummaryOut, tags=["history"])
async def get_run(run_id: str, store: RunStoreDep) -> dict[str, Any]:
    """One run's record (config with secrets redacted, status, timings, error, summary metrics)."""
    summary = await store.get(run_id)
    if summary is None:
        raise RunNotFoundError(f"No run with id {run_id!r}", details={"run_id": run_id})
    return service.summary_to_dict(summary)


@router.post(
    "/runs/{run_id}/rerun",
    response_model=RunResponse,
    status_code=202,
    tags=["history"],
    responses={
        404: {"description": "No run with that id (NOT_FOUND)"},
        409: {"description": "The runner is not idle (RUN_ALREADY_ACTIVE)"},
        422: {"description": "The run cannot be repeated (RERUN_NOT_POSSIBLE), e.g. not a backtest"},
    },
)
async def rerun(
    run_id: str, runs: RunsDep, store: RunStoreDep, once: IdempotencyDep, response: Response
) -> dict[str, Any]:
    """Run a stored backtest again with the same inputs (its resolved range too); 202 with the new run's id.

    When it finishes, its results carry `rerun`: `{of, identical, changes: [{field, before, after}]}`.
    """
    if store is None:
        raise RunNotFoundError(f"No run with id {run_id!r} (this server keeps no history)", details={"run_id": run_id})

    async def start() -> dict[str, Any]:
        original = await load_stored_run(store, run_id)
        result: dict[str, Any] = await runs.slot.start_backtest(rerun_config(original), rerun_of=original)
        result["message"] = f"Rerun of {run_id} accepted; when it finishes its results' `rerun` lists what changed"
        return result

    return await once(route=f"POST /runs/{run_id}/rerun", body={}, response=response, start=start)


@router.get("/runs/{run_id}/results", response_model=ResultsResponse, tags=["history"])
async def get_run_results(
    run_id: str,
    runs: RunsDep,
    store: RunStoreDep,
    settings: WebSettingsDep,
    encoder: EncoderDep,
    max_points: MaxPoints = None,
    limit: Limit = None,
    offset: Offset = 0,
) -> Response:
    """A run's results (running, stopped or past; backtest or session), sliced like `/results`."""
    return await _page(runs, store, settings, encoder, run_id, max_points, limit, offset)


async def _export(runs: RunsView, store: Any, run_id: str, kind: str) -> StreamingResponse:
    head = await service.export_head(runs, store, run_id)
    chunks = service.export_chunks(runs, store, run_id, "orders" if kind == "trades" else "equity")
    return StreamingResponse(
        service.csv_stream(chunks, kind, head),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{run_id}-{kind}.csv"'},
    )


@router.get("/runs/{run_id}/trades.csv", tags=["history"], response_class=StreamingResponse)
async def download_trades(run_id: str, runs: RunsDep, store: RunStoreDep) -> StreamingResponse:
    """Every fill of a run as CSV, streamed a stored chunk at a time."""
    return await _export(runs, store, run_id, "trades")


@router.get("/runs/{run_id}/equity.csv", tags=["history"], response_class=StreamingResponse)
async def download_equity(run_id: str, runs: RunsDep, store: RunStoreDep) -> StreamingResponse:
    """The full equity curve of a run as CSV, streamed a stored chunk at a time."""
    return await _export(runs, store, run_id, "equity")


@router.delete("/runs/{run_id}", status_code=204, tags=["history"])
async def delete_run(run_id: str, runs: RunsDep, store: RunStoreDep) -> Response:
    """Delete a finished run and its results; an active run cannot be deleted."""
    registry = runs.registry
    known, user = registry.owner_of(run_id)
    if known and runs.owner is not None and user != runs.owner:
        # Another user's run: not found, without saying whether it is active.
        raise RunNotFoundError(f"No run with id {run_id!r}", details={"run_id": run_id})
    if known and service.is_active(registry.find(run_id)):
        raise RunNotResettableError("Cannot delete the active run; stop it first", details={"run_id": run_id})
    # A stopped run may still be saving: let it finish, or the save would bring it back.
    await registry.settle(run_id)
    if not await store.delete(run_id):
        raise RunNotFoundError(f"No run with id {run_id!r}", details={"run_id": run_id})
    registry.forget(run_id)
    if registry.shared_slots is not None:
        await registry.shared_slots.forget(run_id)
    return Response(status_code=204)
