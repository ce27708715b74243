"""Persistence of stored strategies (named presets), always scoped to one owner."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from cracktrader.db.engine import make_sessionmaker
from cracktrader.db.models import StrategyRecord

__all__ = ["LOCAL_OWNER", "DuplicateNameError", "StoredStrategy", "StrategyStore", "name_key"]

# Owner id of presets created while auth is off (the local operator has no user row).
LOCAL_OWNER = 0


class DuplicateNameError(Exception):
    """The owner already has a preset with that name (compared case-insensitively)."""


def name_key(name: str) -> str:
    """The form names are compared in: trimmed and case-folded."""
    return name.strip().casefold()


@dataclass(frozen=True, slots=True)
class StoredStrategy:
    """A preset as the rest of the code sees it."""

    id: int
    owner_id: int
    name: str
    description: str
    base_strategy: str | None
    parameters: dict[str, Any]
    is_active: bool
    created_at: datetime
    updated_at: datetime


def _row(r: StrategyRecord) -> StoredStrategy:
    return StoredStrategy(
        id=r.id,
        owner_id=r.owner_id,
        name=r.name,
        description=r.description,
        base_strategy=r.base_strategy,
        parameters=dict(r.parameters or {}),
        is_active=r.is_active,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


class StrategyStore:
    """Create, read, update and delete one owner's presets; another owner's rows are invisible."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = make_sessionmaker(engine)

    async def list(self, *, owner_id: int, active_only: bool = False) -> list[StoredStrategy]:
        """The owner's presets, oldest first."""
        query = select(StrategyRecord).where(StrategyRecord.owner_id == owner_id).order_by(StrategyRecord.id)
        if active_only:
            query = query.where(StrategyRecord.is_active.is_(True))
        async with self._sessions() as session:
            return [_row(r) for r in (await session.execute(query)).scalars()]

    async def count(self, *, owner_id: int) -> int:
        """How many presets the owner has."""
        query = select(func.count()).select_from(StrategyRecord).where(StrategyRecord.owner_id == owner_id)
        async with self._sessions() as session:
            return int((await session.execute(query)).scalar_one())

    async def get(self, strategy_id: int, *, owner_id: int) -> StoredStrategy | None:
        """The preset if it exists and is the owner's."""
        async with self._sessions() as session:
            record = await session.get(StrategyRecord, strategy_id)
            return _row(record) if record is not None and record.owner_id == owner_id else None

    async def get_by_name(self, name: str, *, owner_id: int) -> StoredStrategy | None:
        """The owner's preset with that name (case-insensitive)."""
        query = select(StrategyRecord).where(
            StrategyRecord.owner_id == owner_id, StrategyRecord.name_key == name_key(name)
        )
        async with self._sessions() as session:
            record = (await session.execute(query)).scalar_one_or_none()
            return _row(record) if record is not None else None

    async def create(
        self,
        *,
        owner_id: int,
        name: str,
        description: str,
        base_strategy: str | None,
        parameters: dict[str, Any],
        is_active: bool,
    ) -> StoredStrategy:
        """Insert a preset; DuplicateNameError when the owner already uses the name."""
        now = datetime.now(UTC)
        record = StrategyRecord(
            owner_id=owner_id,
            name=name.strip(),
            name_key=name_key(name),
            description=description,
            base_strategy=base_strategy,
            parameters=parameters,
            is_active=is_active,
            created_at=now,
            updated_at=now,
        )
        try:
            async with self._sessions.begin() as session:
                session.add(record)
        except IntegrityError:
            raise DuplicateNameError(name) from None
        return _row(record)

    async def update(self, strategy_id: int, *, owner_id: int, changes: dict[str, Any]) -> StoredStrategy | None:
        """Apply `changes` (column -> value) to the owner's preset; None when it is not theirs or not there."""
        try:
            async with self._sessions.begin() as session:
                record = await session.get(StrategyRecord, strategy_id, with_for_update=True)
                if record is None or record.owner_id != owner_id:
                    return None
                for column, value in changes.items():
                    setattr(record, column, value)
                if "name" in changes:
                    record.name = str(changes["name"]).strip()
                    record.name_key = name_key(record.name)
                record.updated_at = datetime.now(UTC)
        except IntegrityError:
            raise DuplicateNameError(str(changes.get("name"))) from None
        return _row(record)

    async def delete(self, strategy_id: int, *, owner_id: int) -> bool:
        """Delete the owner's preset; False when it is not theirs or not there."""
        async with self._sessions.begin() as session:
            record = await session.get(StrategyRecord, strategy_id)
            if record is None or record.owner_id != owner_id:
                return False
            await session.delete(record)
        return True
