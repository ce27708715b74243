"""`Annotated` dependency aliases for the routers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

from cracktrader.runs.manager import RunManager
from cracktrader.web.config import WebSettings

if TYPE_CHECKING:
    from cracktrader.db.run_store import RunStore


def get_manager(request: Request) -> RunManager:
    return request.app.state.manager


def get_web_settings(request: Request) -> WebSettings:
    return request.app.state.web_settings


def get_run_store(request: Request) -> Any:
    return request.app.state.run_store


ManagerDep = Annotated[RunManager, Depends(get_manager)]
WebSettingsDep = Annotated[WebSettings, Depends(get_web_settings)]
RunStoreDep = Annotated["RunStore", Depends(get_run_store)]
