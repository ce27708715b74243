"""A new user's first commands: `serve` without the web extra, `serve`'s dashboard URL, `GET /`, `--version`."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from cracktrader import __version__
from cracktrader.cli import app
from cracktrader.web.server.main import dashboard_url
from support import free_loopback_port
from web_support import app_client

runner = CliRunner()
# Runs the CLI as the console script does, with `uvicorn` made unimportable as after a plain `pip install -e .`.
WITHOUT_UVICORN = (
    "import sys; sys.modules['uvicorn'] = None; sys.argv = ['cracktrader', 'serve']; "
    "from cracktrader.cli import main; main()"
)


def test_serve_without_the_web_extra_prints_one_line_naming_it_and_exits_1() -> None:
    proc = subprocess.run([sys.executable, "-c", WITHOUT_UVICORN], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "error: the web server needs the web extra: pip install 'cracktrader[web]' (uvicorn is missing)"
    ]
    assert proc.stdout == ""


def test_version_prints_the_package_version_and_exits_0() -> None:
    result = runner.invoke(app, ["--version"])
    assert (result.exit_code, result.stdout) == (0, f"cracktrader {__version__}\n")
    proc = subprocess.run([sys.executable, "-m", "cracktrader", "--version"], capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (0, f"cracktrader {__version__}\n")


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000/ui"),
        ("0.0.0.0", "http://127.0.0.1:8000/ui"),
        ("::1", "http://[::1]:8000/ui"),
        ("localhost", "http://localhost:8000/ui"),
    ],
)
def test_dashboard_url_is_one_a_browser_can_open(host: str, url: str) -> None:
    assert dashboard_url(host, 8000) == url


def test_serve_prints_the_dashboard_url_and_the_root_redirects_to_it() -> None:
    port = free_loopback_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cracktrader", "serve", "--port", str(port), "--log-level", "warning"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert first == f"Cracktrader dashboard: http://127.0.0.1:{port}/ui\n"
        deadline = time.monotonic() + 60
        while True:
            try:
                root = httpx.get(f"http://127.0.0.1:{port}/", follow_redirects=False)
                break
            except httpx.ConnectError:
                assert proc.poll() is None and time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.05)
        assert (root.status_code, root.headers["location"]) == (307, "/ui")
        page = httpx.get(f"http://127.0.0.1:{port}/", follow_redirects=True)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_get_root_redirects_to_the_dashboard() -> None:
    async with app_client() as c:
        r = await c.get("/")
        assert (r.status_code, r.headers["location"]) == (307, "/ui")
        assert (await c.get("/", follow_redirects=True)).status_code == 200
