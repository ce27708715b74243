"""Stored walk-forwards: created when accepted, their report written once when they end."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cracktrader.db import job_tables
from cracktrader.db.models import WalkForwardRecord
from cracktrader.sweeps.request import SweepProgress
from cracktrader.sweeps.walkforward_request import WalkForwardDocument

__all__ = ["WalkForwardStore"]

_WF = cast(Table, WalkForwardRecord.__table__)
INTERRUPTED = "The server stopped while this walk-forward ran; start it again"


class WalkForwardStore:
    """The `walkforwards` table."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(self, doc: WalkForwardDocument, *, user_id: int | None, server_id: str) -> None:
        """Record an accepted walk-forward (queued)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(_WF).values(
                    id=doc.walkforward_id,
                    user_id=user_id,
                    kind=doc.kind,
                    status=doc.status,
                    strategy_name=doc.strategy_name,
                    request=doc.request,
                    combinations=doc.combinations,
                    done=0,
                    total=doc.progress.total,
                    server_id=server_id,
                    created_at=doc.created_at,
                )
            )

    async def mark_running(self, walkforward_id: str, *, started_at: datetime) -> None:
        """A worker picked the walk-forward up."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(_WF).where(_WF.c.id == walkforward_id).values(status="running", started_at=started_at)
            )

    async def finish(self, doc: WalkForwardDocument) -> bool:
        """Write how the walk-forward ended, with its report when it completed; False (nothing written) when it had
        ended already (a lapsed lease failed it)."""
        report = None if doc.report is None else doc.report.model_dump(mode="json")
        async with self.engine.begin() as conn:
            ended = await conn.execute(
                update(_WF)
                .where(_WF.c.id == doc.walkforward_id, _WF.c.ended_at.is_(None))
                .values(
                    status=doc.status,
                    done=doc.progress.done,
                    total=doc.progress.total,
                    report=report,
                    error=doc.error,
                    error_code=doc.error_code,
                    ended_at=doc.ended_at,
                )
            )
        return bool(ended.rowcount == 1)

    async def interrupt(self, *, ended_at: datetime) -> int:
        """Fail the unfinished walk-forwards of servers that no longer hold a lease
        (those the run queue holds excepted)."""
        return await job_tables.interrupt(self.engine, _WF, ended_at=ended_at, error=INTERRUPTED)

    async def requeue(self, job_id: str) -> None:
        """Read "queued" again: an executor handed it back to the queue."""
        await job_tables.requeue(self.engine, _WF, job_id)

    async def discard(self, job_id: str) -> None:
        """Remove one the queue refused."""
        await job_tables.discard(self.engine, _WF, job_id)

    async def get(self, walkforward_id: str) -> tuple[WalkForwardDocument, int | None] | None:
        """A walk-forward with its report, and its owner, or None."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(_WF).where(_WF.c.id == walkforward_id))).mappings().first()
        return None if row is None else (_document(dict(row)), row["user_id"])

    async def page(self, *, user_id: int | None, limit: int, offset: int) -> tuple[list[WalkForwardDocument], int]:
        """A page of walk-forwards newest first, without reports; `user_id` None lists everyone's (admins)."""
        where = [] if user_id is None else [_WF.c.user_id == user_id]
        columns = [c for c in _WF.c if c.name != "report"]
        page = (
            select(*columns)
            .where(*where)
            .order_by(_WF.c.created_at.desc(), _WF.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        count = select(func.count()).select_from(_WF).where(*where)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(page)).mappings().all()
            total = int((await conn.execute(count)).scalar_one())
        return [_document(dict(r)) for r in rows], total


def _document(row: dict[str, Any]) -> WalkForwardDocument:
    done, total = row["done"], row["total"]
    return WalkForwardDocument(
        walkforward_id=row["id"],
        kind=row["kind"],
        status=row["status"],
        strategy_name=row["strategy_name"],
        progress=SweepProgress(done=done, total=total, fraction=done / total if total else 1.0, eta_seconds=None),
        combinations=row["combinations"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        error=row["error"],
        error_code=row["error_code"],
        request=row["request"] or {},
        report=row.get("report"),
    )
