"""Runner slots in the database: each change is one compare-and-set, so two processes never fill one slot."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from cracktrader.db.models import RunnerSlotRecord

LOCAL_OWNER = "local"  # the auth-off operator's slot


def owner_key(user_id: int | None) -> str:
    """The slot's key: the user id, or "local" for the auth-off operator."""
    return LOCAL_OWNER if user_id is None else str(user_id)


@dataclass(frozen=True, slots=True)
class SlotPointer:
    """The run a slot shows, and the one it showed before its last reset."""

    run_id: str | None = None
    last_run_id: str | None = None


IDLE_POINTER = SlotPointer()


class SlotStore:
    """Slot pointers shared by every process on the database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def get(self, owner: str) -> SlotPointer:
        """The slot's pointer (idle when it was never used)."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(RunnerSlotRecord.run_id, RunnerSlotRecord.last_run_id).where(RunnerSlotRecord.owner == owner)
                )
            ).first()
        return IDLE_POINTER if row is None else SlotPointer(row.run_id, row.last_run_id)

    async def fill(self, owner: str, run_id: str) -> SlotPointer | None:
        """Point an empty slot at `run_id` (its last run is forgotten); None when it was not empty."""
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(RunnerSlotRecord)
                .where(RunnerSlotRecord.owner == owner, RunnerSlotRecord.run_id.is_(None))
                .values(run_id=run_id, last_run_id=None, updated_at=now)
            )
            if result.rowcount == 1:
                return SlotPointer(run_id)
            exists = (await conn.execute(select(RunnerSlotRecord.owner).where(RunnerSlotRecord.owner == owner))).first()
            if exists is not None:
                return None
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(RunnerSlotRecord).values(owner=owner, run_id=run_id, updated_at=now))
        except IntegrityError:  # another process filled it first
            return None
        return SlotPointer(run_id)

    async def empty(self, owner: str, run_id: str) -> bool:
        """Reset a slot showing `run_id` to idle (it keeps `run_id` as its last run); False if it shows another."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(RunnerSlotRecord)
                .where(RunnerSlotRecord.owner == owner, RunnerSlotRecord.run_id == run_id)
                .values(run_id=None, last_run_id=run_id, updated_at=datetime.now(UTC))
            )
        return bool(result.rowcount == 1)

    async def forget(self, run_id: str) -> list[str]:
        """A deleted run: the slots that showed it no longer do; their owners."""
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            owners: set[str] = set()
            for column in (RunnerSlotRecord.run_id, RunnerSlotRecord.last_run_id):
                result = await conn.execute(
                    update(RunnerSlotRecord)
                    .where(column == run_id)
                    .values({column.key: None, "updated_at": now})
                    .returning(RunnerSlotRecord.owner)
                )
                owners.update(row[0] for row in result.all())
        return sorted(owners)
