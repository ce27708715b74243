"""Stored sweeps: created when accepted, their rows written once when they end, read back by rank or any metric."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cracktrader.db import job_tables
from cracktrader.db.models import SweepRecord, SweepRowRecord
from cracktrader.sweeps.request import SweepDocument, SweepProgress, SweepRowOut

if TYPE_CHECKING:
    from cracktrader.sweeps.plans import SweepRow

__all__ = ["SweepStore"]

_SWEEPS = cast(Table, SweepRecord.__table__)
_ROWS = cast(Table, SweepRowRecord.__table__)
# Rows per INSERT statement (PostgreSQL allows 65,535 bind parameters per statement). Small enough that binding
# one batch (its JSON encoded on the event loop) holds the server's loop for a few milliseconds only.
INSERT_BATCH = 500
INTERRUPTED = "The server stopped while this sweep ran; start it again"


class SweepStore:
    """The `sweeps` and `sweep_rows` tables."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(self, doc: SweepDocument, *, user_id: int | None, server_id: str) -> None:
        """Record an accepted sweep (queued)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(_SWEEPS).values(
                    id=doc.sweep_id,
                    user_id=user_id,
                    status=doc.status,
                    strategy_name=doc.strategy_name,
                    request=doc.request,
                    sort=doc.sort,
                    combinations=doc.combinations,
                    evaluated=0,
                    skipped_count=doc.skipped_count,
                    skipped=[s.model_dump(mode="json") for s in doc.skipped],
                    row_count=0,
                    server_id=server_id,
                    created_at=doc.created_at,
                )
            )

    async def mark_running(self, sweep_id: str, *, started_at: datetime) -> None:
        """A worker picked the sweep up."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(_SWEEPS).where(_SWEEPS.c.id == sweep_id).values(status="running", started_at=started_at)
            )

    async def finish(self, doc: SweepDocument, rows: Sequence[SweepRow]) -> bool:
        """Write the ended sweep's counts and its rows, given best first by its sort (rank 1 first), in one
        transaction; False (nothing written) when it had ended already (a lapsed lease failed it)."""
        async with self.engine.begin() as conn:
            ended = await conn.execute(
                update(_SWEEPS)
                .where(_SWEEPS.c.id == doc.sweep_id, _SWEEPS.c.ended_at.is_(None))
                .values(
                    status=doc.status,
                    evaluated=doc.evaluated,
                    combinations=doc.combinations,
                    skipped_count=doc.skipped_count,
                    skipped=[s.model_dump(mode="json") for s in doc.skipped],
                    row_count=len(rows),
                    error=doc.error,
                    error_code=doc.error_code,
                    ended_at=doc.ended_at,
                )
            )
            if ended.rowcount != 1:
                return False
            for i in range(0, len(rows), INSERT_BATCH):
                batch = rows[i : i + INSERT_BATCH]
                await conn.execute(
                    insert(_ROWS),
                    [
                        {"sweep_id": doc.sweep_id, "idx": r.index, "rank": i + n + 1, "params": r.params,
                         "metrics": r.metrics}
                        for n, r in enumerate(batch)
                    ],
                )  # fmt: skip
        return True

    async def interrupt(self, *, ended_at: datetime) -> int:
        """Fail the unfinished sweeps of servers that no longer hold a lease (those the run queue holds excepted)."""
        return await job_tables.interrupt(self.engine, _SWEEPS, ended_at=ended_at, error=INTERRUPTED)

    async def requeue(self, job_id: str) -> None:
        """Read "queued" again: an executor handed it back to the queue."""
        await job_tables.requeue(self.engine, _SWEEPS, job_id)

    async def discard(self, job_id: str) -> None:
        """Remove one the queue refused."""
        await job_tables.discard(self.engine, _SWEEPS, job_id)

    async def get(self, sweep_id: str) -> tuple[SweepDocument, int | None] | None:
        """A sweep and its owner, or None."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(_SWEEPS).where(_SWEEPS.c.id == sweep_id))).mappings().first()
        return None if row is None else (_document(dict(row)), row["user_id"])

    async def page(self, *, user_id: int | None, limit: int, offset: int) -> tuple[list[SweepDocument], int]:
        """A page of sweeps newest first and how many there are; `user_id` None lists everyone's (admins)."""
        where = [] if user_id is None else [_SWEEPS.c.user_id == user_id]
        page = (
            select(_SWEEPS)
            .where(*where)
            .order_by(_SWEEPS.c.created_at.desc(), _SWEEPS.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        count = select(func.count()).select_from(_SWEEPS).where(*where)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(page)).mappings().all()
            total = int((await conn.execute(count)).scalar_one())
        return [_document(dict(r)) for r in rows], total

    async def ranked(self, sweep_id: str, *, limit: int, offset: int) -> list[SweepRowOut]:
        """A page of rows by the sweep's own rank."""
        query = select(_ROWS).where(_ROWS.c.sweep_id == sweep_id).order_by(_ROWS.c.rank).limit(limit).offset(offset)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_row(dict(r)) for r in rows]

    async def row(self, sweep_id: str, rank: int) -> SweepRowOut | None:
        """The row of `rank` by the sweep's sort, or None."""
        query = select(_ROWS).where(_ROWS.c.sweep_id == sweep_id, _ROWS.c.rank == rank)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _row(dict(row))

    async def all_rows(self, sweep_id: str) -> list[SweepRowOut]:
        """Every row of a sweep (bounded by the server's combination limit), by rank."""
        return await self.ranked(sweep_id, limit=2**31 - 1, offset=0)


def _row(row: dict[str, Any]) -> SweepRowOut:
    return SweepRowOut(rank=row["rank"], index=row["idx"], params=row["params"], metrics=row["metrics"])


def _document(row: dict[str, Any]) -> SweepDocument:
    valid = row["combinations"] - row["skipped_count"]
    done = valid if row["status"] == "completed" else row["evaluated"]
    request = row["request"] or {}
    return SweepDocument(
        sweep_id=row["id"],
        status=row["status"],
        strategy_name=row["strategy_name"],
        progress=SweepProgress(done=done, total=valid, fraction=done / valid if valid else 1.0, eta_seconds=None),
        combinations=row["combinations"],
        evaluated=row["evaluated"],
        skipped_count=row["skipped_count"],
        skipped=row["skipped"] or [],
        rows=row["row_count"],
        sort=row["sort"],
        metrics=request.get("metrics", []),
        top_k=request.get("top_k"),
        created_at=row["created_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        error=row["error"],
        error_code=row["error_code"],
        request=request,
    )
