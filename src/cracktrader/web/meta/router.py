"""`GET /meta`: API version, app version and deprecations."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from cracktrader import __version__
from cracktrader.web.deprecation import DEPRECATIONS, MIN_NOTICE_DAYS
from cracktrader.web.middleware import API_VERSION

router = APIRouter()


class MetaResponse(BaseModel):
    api_version: str
    app_version: str
    deprecation_policy: dict[str, Any]
    deprecations: list[dict[str, str]]
    changelog: str


@router.get("/meta", response_model=MetaResponse, tags=["meta"])
async def get_meta() -> dict[str, Any]:
    """Versions and announced deprecations (each also marked with Deprecation/Sunset/Link headers)."""
    return {
        "api_version": API_VERSION,
        "app_version": __version__,
        "deprecation_policy": {"minimum_notice_days": MIN_NOTICE_DAYS, "headers": ["Deprecation", "Sunset", "Link"]},
        "deprecations": [d.to_dict() for d in DEPRECATIONS],
        "changelog": "docs/api-changelog.md",
    }
