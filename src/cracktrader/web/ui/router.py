"""The local dashboard at `/ui`, mounted last; files are served only from inside the UI folder."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from cracktrader.errors import CracktraderError

UI_DIR = (Path(__file__).resolve().parent.parent / "static" / "ui").resolve()

router = APIRouter(include_in_schema=False)


class UiFileNotFound(CracktraderError):
    code = "NOT_FOUND"
    status_code = 404


@router.get("/ui")
async def index() -> FileResponse:
    """The dashboard page."""
    return FileResponse(UI_DIR / "index.html", media_type="text/html")


@router.get("/ui/{path:path}")
async def asset(path: str) -> FileResponse:
    """A dashboard asset; any path that would leave the UI folder is refused (path traversal)."""
    target = (UI_DIR / path).resolve()
    if not target.is_relative_to(UI_DIR):
        raise UiFileNotFound(f"No UI file {path!r}")
    if not target.is_file():
        if "." in Path(path).name:
            raise UiFileNotFound(f"No UI file {path!r}")
        return FileResponse(UI_DIR / "index.html", media_type="text/html")  # client-side routes
    return FileResponse(target)
