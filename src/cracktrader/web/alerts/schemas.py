"""Response models of `GET /alerts`."""

from __future__ import annotations

from pydantic import BaseModel, Field

from cracktrader.runs.alerts import Alert


class AlertList(BaseModel):
    """A page of alerts, newest first."""

    items: list[Alert]
    total: int = Field(description="Alerts matching the filters")
    limit: int
    offset: int
