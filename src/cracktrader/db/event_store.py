"""The event log: every event of a run, numbered from 1 per run, so a stream on any process can read what it missed."""

from __future__ import annotations

import builtins
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, Select, String, Text, delete, func, insert, literal, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cracktrader.db.models import RunEventRecord, UTCDateTime
from cracktrader.runs.events import Event

__all__ = ["BeforeCommit", "EventStore", "LoggedEvent"]

# Runs inside an append's transaction with the events it numbered.
BeforeCommit = Callable[[AsyncConnection, "builtins.list[LoggedEvent]"], Awaitable[None]]
# Appends that lost a race for the same numbers try again this many times (only several appenders of one run race).
_APPEND_TRIES = 8


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """An event of the log with its run and number."""

    run_id: str
    seq: int
    event: Event


class EventStore:
    """Appends and reads a run's numbered events (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        # The last number this store gave each run: a run has one appender (its executor), so the next append
        # numbers on from here without a lock or a query; another appender's rows make the insert fail on the
        # primary key, and the append numbers again from the table.
        self._last: dict[str, int] = {}

    async def append(
        self, run_id: str, events: Sequence[Event], *, before_commit: BeforeCommit | None = None
    ) -> builtins.list[LoggedEvent]:
        """Number `events` after the run's last and store them in one transaction; returns them numbered.

        `before_commit(conn, logged)` runs inside that transaction (a NOTIFY there is sent at the commit).
        """
        if not events:
            return []
        for attempt in range(_APPEND_TRIES):
            try:
                async with self._engine.begin() as conn:
                    logged = await self._append(conn, run_id, events, self._last.pop(run_id, None))
                    if before_commit is not None:
                        await before_commit(conn, logged)
                self._last[run_id] = logged[-1].seq
                return logged
            except IntegrityError:
                if attempt == _APPEND_TRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def _append(
        self, conn: AsyncConnection, run_id: str, events: Sequence[Event], known: int | None
    ) -> builtins.list[LoggedEvent]:
        now = datetime.now(UTC)
        numbered_first = False
        if known is not None:
            last = known
        elif self._postgres:
            # Appenders of one run take turns (the lock ends with the transaction): no race for the numbers.
            await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:run_id))"), {"run_id": run_id})
            last = int(await conn.scalar(_last_seq(run_id)) or 0)
        else:
            # SQLite has one writer: numbering the first row inside its own INSERT takes the write lock before
            # anyone else can read the same last number, and keeps it to the commit.
            head = events[0]
            numbered = select(
                literal(run_id, String()),
                _last_seq(run_id).scalar_subquery() + 1,
                literal(head.type, String()),
                literal(head.user_id, Integer()),
                literal(head.text, Text()),
                literal(now, UTCDateTime()),
            )
            columns = ["run_id", "seq", "type", "user_id", "body", "created_at"]
            await conn.execute(insert(RunEventRecord).from_select(columns, numbered))
            last = int(await conn.scalar(_last_seq(run_id)) or 0) - 1
            numbered_first = True
        logged = [LoggedEvent(run_id, last + i + 1, event) for i, event in enumerate(events)]
        rows = [
            {
                "run_id": run_id,
                "seq": item.seq,
                "type": item.event.type,
                "user_id": item.event.user_id,
                "body": item.event.text,
                "created_at": now,
            }
            for item in (logged[1:] if numbered_first else logged)
        ]
        if rows:
            await conn.execute(insert(RunEventRecord), rows)
        return logged

    async def read_after(self, run_id: str, seq: int, *, limit: int = 1000) -> builtins.list[LoggedEvent]:
        """The run's events numbered above `seq`, in order, at most `limit`."""
        query = (
            select(RunEventRecord.seq, RunEventRecord.user_id, RunEventRecord.body)
            .where(RunEventRecord.run_id == run_id, RunEventRecord.seq > seq)
            .order_by(RunEventRecord.seq)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [LoggedEvent(run_id, int(row.seq), _event(row.body, row.user_id)) for row in rows]

    async def last_of_type(self, run_id: str, event_type: str) -> LoggedEvent | None:
        """The run's latest event of one type (a run's latest `status_update` is its status), or None."""
        query = (
            select(RunEventRecord.seq, RunEventRecord.user_id, RunEventRecord.body)
            .where(RunEventRecord.run_id == run_id, RunEventRecord.type == event_type)
            .order_by(RunEventRecord.seq.desc())
            .limit(1)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else LoggedEvent(run_id, int(row.seq), _event(row.body, row.user_id))

    async def last_seq(self, run_id: str) -> int:
        """The run's last event number (0: none yet)."""
        async with self._engine.connect() as conn:
            return int(await conn.scalar(_last_seq(run_id)) or 0)

    async def delete_run(self, run_id: str) -> int:
        """Forget a run's events (the run was deleted); how many were."""
        self._last.pop(run_id, None)
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(RunEventRecord).where(RunEventRecord.run_id == run_id))
        return int(result.rowcount or 0)

    async def prune(self, *, before: datetime) -> int:
        """Forget events stored before `before` (of runs long ended: a running run's numbers must go on)."""
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(RunEventRecord).where(RunEventRecord.created_at < before))
        return int(result.rowcount or 0)


def _last_seq(run_id: str) -> Select[Any]:
    return select(func.coalesce(func.max(RunEventRecord.seq), 0)).where(RunEventRecord.run_id == run_id)


def _event(body: str, user_id: int | None) -> Event:
    doc = json.loads(body)
    return Event(doc["type"], doc["payload"], doc["timestamp"], user_id=user_id)
