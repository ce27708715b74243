"""Stored alerts: written once when raised, listed newest first per owner, optionally of one run or kind."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cracktrader.db.models import AlertRecord
from cracktrader.runs.alerts import Alert, AlertDetails, AlertKind, Severity

__all__ = ["AlertStore"]

_ALERTS = cast(Table, AlertRecord.__table__)


class AlertStore:
    """The `alerts` table."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add(self, alert: Alert) -> None:
        """Store one alert."""
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(_ALERTS).values(
                    id=alert.id,
                    run_id=alert.run_id,
                    user_id=alert.user_id,
                    kind=str(alert.kind),
                    severity=str(alert.severity),
                    message=alert.message,
                    details=alert.details.model_dump(mode="json", exclude_none=True),
                    created_at=alert.created_at,
                )
            )

    async def list(
        self,
        *,
        user_id: int | None = None,
        run_id: str | None = None,
        kind: AlertKind | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Alert], int]:
        """A page of alerts newest first and how many match; `user_id` None lists every owner's (admins).

        Ids sort as the alerts were raised (runs.alerts.alert_id): they order alerts of the same instant.
        """
        where: list[Any] = []
        if user_id is not None:
            where.append(_ALERTS.c.user_id == user_id)
        if run_id is not None:
            where.append(_ALERTS.c.run_id == run_id)
        if kind is not None:
            where.append(_ALERTS.c.kind == str(kind))
        page = (
            select(_ALERTS)
            .where(*where)
            .order_by(_ALERTS.c.created_at.desc(), _ALERTS.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        count = select(func.count()).select_from(_ALERTS).where(*where)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(page)).mappings().all()
            total = int((await conn.execute(count)).scalar_one())
        return [_alert(dict(r)) for r in rows], total


def _alert(row: dict[str, Any]) -> Alert:
    return Alert(
        id=row["id"],
        kind=AlertKind(row["kind"]),
        severity=Severity(row["severity"]),
        run_id=row["run_id"],
        user_id=row["user_id"],
        message=row["message"],
        details=AlertDetails.model_validate(row["details"] or {}),
        created_at=row["created_at"],
    )
