"""Health response model."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class HealthResponse(BaseModel):
    """Overall health with checks and metrics."""

    status: Literal["healthy", "degraded", "unhealthy"]
    version: str
    api_version: str
    checks: dict[str, Any]
    metrics: dict[str, Any]
    timestamp: str
