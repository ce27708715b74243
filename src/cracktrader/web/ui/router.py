"""The local dashboard at `/ui` and its JavaScript SDK at `/ui/sdk`, mounted last; only shipped files are served."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from cracktrader.errors import CracktraderError

UI_DIR = (Path(__file__).resolve().parent.parent / "static" / "ui").resolve()
# The cracktrader-js package (static/sdk), served to the dashboard and other pages as ES modules.
SDK_DIR = (Path(__file__).resolve().parent.parent / "static" / "sdk").resolve()
SDK_PREFIX = "sdk/"
# Types the browser must not sniff or guess: `.ts` would be served as MPEG transport stream video.
MEDIA_TYPES = {".ts": "text/plain; charset=utf-8", ".md": "text/markdown; charset=utf-8"}
MAX_UI_PATH = 200

router = APIRouter(include_in_schema=False)


def _files(folder: Path, prefix: str = "") -> dict[str, Path]:
    """Every file of a folder by its URL path; requests are looked up here, never joined onto the disk."""
    if not folder.is_dir():
        return {}
    # An `npm install` run inside the SDK's folder must not publish its node_modules.
    return {
        prefix + p.relative_to(folder).as_posix(): p
        for p in folder.rglob("*")
        if p.is_file() and "node_modules" not in p.relative_to(folder).parts
    }


# Built once: the dashboard ships with the package. Looking names up (no path joins, no stat of what the client
# sent) rules out traversal, NUL bytes and names too long for the filesystem at once. The SDK's files come
# after the UI's so that the SDK under `sdk/` is the one served even if the UI ever had an `sdk` folder.
UI_FILES = {**_files(UI_DIR), **_files(SDK_DIR, SDK_PREFIX)}


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
        return FileResponse(target, media_type=MEDIA_TYPES.get(target.suffix))
    shown = path if len(path) <= MAX_UI_PATH else f"{path[:MAX_UI_PATH]}..."
    if len(path) > MAX_UI_PATH or "." in PurePosixPath(path).name or ".." in path.split("/"):
        raise UiFileNotFound(f"No UI file {shown!r}", details={"path": shown})
    return FileResponse(UI_DIR / "index.html", media_type="text/html")  # client-side routes
