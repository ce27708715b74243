"""Deprecated routes: announced in `GET /api/v1/meta` and marked with Deprecation, Sunset and Link headers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

MIN_NOTICE_DAYS = 90


@dataclass(frozen=True, slots=True)
class Deprecation:
    """One deprecated route and what replaces it."""

    method: str
    path: str
    replacement: str
    deprecated_on: datetime
    sunset_on: datetime
    note: str = ""

    def __post_init__(self) -> None:
        if (self.sunset_on - self.deprecated_on).days < MIN_NOTICE_DAYS:
            raise ValueError(f"{self.path}: the policy requires {MIN_NOTICE_DAYS} days between deprecation and sunset")

    def headers(self) -> list[tuple[bytes, bytes]]:
        """RFC 9745 Deprecation (a structured-field date), RFC 8594 Sunset, and a Link to the successor."""
        return [
            (b"deprecation", f"@{int(self.deprecated_on.timestamp())}".encode()),
            (b"sunset", format_datetime(self.sunset_on, usegmt=True).encode()),
            (b"link", f'<{self.replacement}>; rel="successor-version"'.encode()),
        ]

    def to_dict(self) -> dict[str, str]:
        """How `GET /api/v1/meta` lists it."""
        return {
            "method": self.method,
            "path": self.path,
            "replacement": self.replacement,
            "deprecated_on": self.deprecated_on.date().isoformat(),
            "sunset_on": self.sunset_on.date().isoformat(),
            "note": self.note,
        }


DEPRECATIONS: tuple[Deprecation, ...] = (
    Deprecation(
        method="GET",
        path="/api/v1/run/status",
        replacement="/api/v1/status",
        deprecated_on=datetime(2026, 11, 1, tzinfo=UTC),
        sunset_on=datetime(2027, 3, 1, tzinfo=UTC),
        note="Early clients polled /run/status; use /status.",
    ),
)

DEPRECATED_PATHS: dict[tuple[str, str], Deprecation] = {(d.method, d.path): d for d in DEPRECATIONS}
