"""What the `sweeps` and `walkforwards` tables share: failing the jobs of gone servers, and their run-queue states.

With the run queue on, a job's document lives in its own table and its place in the queue is a `runs` row of the
same id (kind "sweep" or "walkforward"); these keep the two in step.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Select, Table, Update, and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cracktrader.db.models import RunRecord, ServerRecord, SweepRecord, WalkForwardRecord

_SERVERS = cast(Table, ServerRecord.__table__)
# The queue kinds whose documents live in a table of their own.
JOB_TABLES: dict[str, Table] = {
    "sweep": cast(Table, SweepRecord.__table__),
    "walkforward": cast(Table, WalkForwardRecord.__table__),
}
JOB_KINDS: tuple[str, ...] = tuple(JOB_TABLES)
QUEUED_AGAIN: dict[str, object] = {"status": "queued", "started_at": None}
EXPIRED = "The executor running it stopped renewing its lease; start it again"


def _in_queue() -> Select[str]:
    """The ids the run queue still holds (queued, or claimed by an executor that renews its lease)."""
    return select(RunRecord.id).where(RunRecord.queue_state.in_(("queued", "claimed")))


async def interrupt(engine: AsyncEngine, table: Table, *, ended_at: datetime, error: str) -> int:
    """Fail the unfinished jobs of servers that no longer hold a lease: their worker died with them.

    Run after this server took its lease, which removed the servers it found gone (runs.lease). A job the run
    queue holds is left alone: whichever executor claims it runs it, whatever server accepted it.
    """
    leased = select(_SERVERS.c.id)
    gone = or_(table.c.server_id.is_(None), table.c.server_id.not_in(leased))
    async with engine.begin() as conn:
        done = await conn.execute(
            update(table)
            .where(and_(table.c.ended_at.is_(None), gone, table.c.id.not_in(_in_queue())))
            .values(status="failed", error=error, error_code="INTERRUPTED", ended_at=ended_at)
        )
    return int(done.rowcount or 0)


def _unfinished(table: Table, job_id: str) -> Update:
    return update(table).where(table.c.id == job_id, table.c.ended_at.is_(None))


async def requeue(engine: AsyncEngine, table: Table, job_id: str) -> None:
    """A job handed back to the queue reads "queued" again until an executor claims it (one that did already
    is left to say it runs)."""
    waiting = select(RunRecord.id).where(RunRecord.id == job_id, RunRecord.queue_state == "queued")
    async with engine.begin() as conn:
        await conn.execute(_unfinished(table, job_id).where(table.c.id.in_(waiting)).values(QUEUED_AGAIN))


async def discard(engine: AsyncEngine, table: Table, job_id: str) -> None:
    """Remove a job the queue refused (the user's limit): it never existed."""
    async with engine.begin() as conn:
        await conn.execute(delete(table).where(table.c.id == job_id))


async def follow_reclaim(conn: AsyncConnection, kind: str | None, job_id: str, *, failed: bool, now: datetime) -> None:
    """Keep a job's document in step with the queue taking it back from a lapsed executor (same transaction)."""
    table = JOB_TABLES.get(kind or "")
    if table is None:
        return
    failed_values = {"status": "failed", "error": EXPIRED, "error_code": "INTERRUPTED", "ended_at": now}
    await conn.execute(_unfinished(table, job_id).values(failed_values if failed else QUEUED_AGAIN))
