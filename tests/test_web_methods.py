"""A wrong method gets a 405 whose `Allow` header lists every method the path serves, on every route."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from cracktrader.settings import Settings
from cracktrader.web.app import create_app
from cracktrader.web.config import WebSettings
from cracktrader.web.errors import HTTP_METHODS

pytestmark = pytest.mark.anyio

# Routing answers a 405 before any dependency runs, so the app needs no lifespan (database, run manager) here.
APP = create_app(Settings(data_dir=Path("unused")), WebSettings())
OPENAPI = APP.openapi()


def _methods_by_path() -> dict[str, set[str]]:
    """Documented methods per concrete path: templates that differ only in a parameter's name are one path."""
    out: dict[str, set[str]] = {}
    for template, operations in OPENAPI["paths"].items():
        path = re.sub(r"\{[^}]+\}", "1", template)
        out.setdefault(path, set()).update(m.upper() for m in operations)
    return out


DOCUMENTED = _methods_by_path()
# Routes left out of the schema: the docs, the schema itself and the dashboard.
UNDOCUMENTED = {
    "/docs": {"GET"},
    "/redoc": {"GET"},
    "/openapi.json": {"GET", "HEAD"},
    "/ui": {"GET"},
    "/ui/app.js": {"GET"},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_the_schema_has_paths_with_several_methods_to_check() -> None:
    assert DOCUMENTED["/api/v1/strategies"] == {"GET", "POST"}
    assert DOCUMENTED["/api/v1/strategies/1"] == {"GET", "PUT", "DELETE"}
    assert len(DOCUMENTED) >= 25


@pytest.mark.parametrize(("path", "methods"), sorted({**DOCUMENTED, **UNDOCUMENTED}.items()))
async def test_a_405_allow_header_lists_every_method_of_the_path(path: str, methods: set[str]) -> None:
    expected = ", ".join(m for m in HTTP_METHODS if m in methods)
    wrong = [m for m in ("OPTIONS", "PATCH", "PUT", "DELETE") if m not in methods]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=APP), base_url="http://127.0.0.1:8000") as c:
        for method in wrong:
            r = await c.request(method, path)
            assert r.status_code == 405, (method, path, r.status_code, r.text[:200])
            assert r.headers["allow"] == expected, (method, path)
            assert r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
            assert r.json()["error"]["message"] == f"Method {method} is not allowed on {path}"
