"""`GET /logs`: the server's recent log lines (admins only when auth is on)."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from cracktrader.web.deps import require_admin
from cracktrader.web.logs.buffer import MAX_LINES, LogTail
from cracktrader.web.logs.schemas import LogTailResponse

router = APIRouter()
Level = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


@router.get("/logs", response_model=LogTailResponse, tags=["logs"], responses={403: {"description": "Not an admin"}})
async def get_logs(
    request: Request,
    level: Annotated[Level, Query(description="This level and above")] = "INFO",
    run_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LINES)] = 200,
) -> dict[str, Any]:
    """The newest log lines of the server, oldest first, by level and run; secrets are redacted."""
    require_admin(request)
    tail: LogTail = request.app.state.log_tail
    items = tail.tail(level=logging.getLevelNamesMapping()[level], run_id=run_id, limit=limit)
    return {"items": items, "total": len(items), "capacity": MAX_LINES}
