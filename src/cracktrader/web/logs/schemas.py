"""Response models of the log tail."""

from __future__ import annotations

from pydantic import BaseModel, Field


class LogLine(BaseModel):
    time: str = Field(description="UTC, ISO 8601 with milliseconds")
    level: str
    logger: str
    run_id: str | None = Field(description="The run the line is about, where the server knows it")
    message: str = Field(description="The message (and traceback), secrets redacted")


class LogTailResponse(BaseModel):
    items: list[LogLine]
    total: int = Field(description="Lines returned")
    capacity: int = Field(description="Lines the server keeps")
