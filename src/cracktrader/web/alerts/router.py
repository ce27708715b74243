"""`GET /alerts`: the caller's alerts (an admin's: everyone's), newest first, by run and kind."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from cracktrader.runs.alerts import AlertKind
from cracktrader.web.alerts.schemas import AlertList
from cracktrader.web.alerts.service import AlertService
from cracktrader.web.deps import _principal

router = APIRouter()


@router.get("/alerts", response_model=AlertList, tags=["alerts"])
async def list_alerts(
    request: Request,
    run_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Only this run's")] = None,
    kind: Annotated[AlertKind | None, Query(description="Only this kind")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> AlertList:
    """Alerts of the caller's runs: halts, drifts, bans, lost or revived orders, external orders, failures."""
    service: AlertService = request.app.state.alerts
    principal = _principal(request)
    owner = principal.owner_filter if principal is not None else None
    items, total = await service.list(owner=owner, run_id=run_id, kind=kind, limit=limit, offset=offset)
    return AlertList(items=items, total=total, limit=limit, offset=offset)
