"""The local dashboard at `/ui`, mounted last; only the files shipped in the UI folder are ever served."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from cracktrader.errors import CracktraderError

UI_DIR = (Path(__file__).resolve().parent.parent / "static" / "ui").resolve()
MAX_UI_PATH = 200

router = APIRouter(include_in_schema=False)


def _ui_files() -> dict[str, Path]:
    """Every file of the UI folder by its URL path; requests are looked up here, never joined onto the disk."""
    return {p.relative_to(UI_DIR).as_posix(): p for p in UI_DIR.rglob("*") if p.is_file()}


# Built once: the dashboard ships with the package. Looking names up (no path joins, no stat of what the client
# sent) rules out traversal, NUL bytes and names too long for the filesystem at once.
UI_FILES = _ui_files()


class UiFileNotFound(CracktraderError):
    code = "NOT_FOUND"
    status_code = 404


@router.get("/")
async def root() -> RedirectResponse:
    """The site's root is the dashboard (it used to answer a JSON 404)."""
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui")
async def index() -> FileResponse:
    """The dashboard page."""
    return FileResponse(UI_DIR / "index.html", media_type="text/html")


@router.get("/ui/{path:path}")
async def asset(path: str) -> FileResponse:
    """A dashboard asset; a name with an extension that is not shipped is a 404, anything else a client route."""
    target = UI_FILES.get(path)
    if target is not None:
        return FileResponse(target)
    shown = path if len(path) <= MAX_UI_PATH else f"{path[:MAX_UI_PATH]}..."
    if len(path) > MAX_UI_PATH or "." in PurePosixPath(path).name or ".." in path.split("/"):
        raise UiFileNotFound(f"No UI file {shown!r}", details={"path": shown})
    return FileResponse(UI_DIR / "index.html", media_type="text/html")  # client-side routes
