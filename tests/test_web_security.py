"""Local security: loopback binding, Host and Origin checks, JSON-only writes, body caps, CORS, UI and docs."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import httpx
import pytest

from cracktrader.web.server.main import ServerConfigError, check_server_config
from support import free_loopback_port
from web_support import YEAR_1H, app_client

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_non_loopback_bind_without_auth_is_refused() -> None:
    with pytest.raises(ServerConfigError, match=r"Refusing to bind 0\.0\.0\.0"):
        check_server_config(host="0.0.0.0", workers=1, insecure=False)


def test_insecure_flag_allows_a_public_bind_with_a_loud_warning() -> None:
    (warning,) = check_server_config(host="0.0.0.0", workers=1, insecure=True)
    assert warning.startswith("INSECURE")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_binds_are_allowed(host: str) -> None:
    assert check_server_config(host=host, workers=1, insecure=False) == []


def test_more_than_one_worker_needs_postgresql_and_the_event_log() -> None:
    with pytest.raises(ServerConfigError, match="--workers 2 is refused: SQLite serves one process") as on_sqlite:
        check_server_config(host="127.0.0.1", workers=2, insecure=False, database_url="sqlite+aiosqlite:///x.db")
    assert "set DATABASE_URL to PostgreSQL" in str(on_sqlite.value) and "--workers 1" in str(on_sqlite.value)
    postgres = "postgresql+asyncpg://h/db"
    assert check_server_config(host="127.0.0.1", workers=2, insecure=False, database_url=postgres) == []
    with pytest.raises(ServerConfigError, match="needs the event log"):
        check_server_config(host="127.0.0.1", workers=2, insecure=False, database_url=postgres, event_log=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--host", "0.0.0.0"], "Refusing to bind 0.0.0.0"), (["--workers", "3"], "--workers 3 is refused")],
)
def test_server_command_refuses_unsafe_configurations(args: list[str], message: str) -> None:
    for cmd in ([sys.executable, "-m", "cracktrader.web.server.main"], [sys.executable, "-m", "cracktrader", "serve"]):
        proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2
        assert message in proc.stderr and "Traceback" not in proc.stderr


def test_server_command_serves_on_the_given_port_and_warns_when_insecure() -> None:
    port = free_loopback_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "scripts/run_web_server.py",
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            "--insecure",
            "--log-level",
            "warning",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("server did not start")
        assert r.status_code == 200 and r.headers["x-cracktrader-api-version"] == "v1"
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=15)
    assert "WARNING: INSECURE: serving on 0.0.0.0 without authentication" in stderr


async def test_foreign_host_header_is_rejected_to_stop_dns_rebinding() -> None:
    async with app_client() as c:
        r = await c.get("/api/v1/status", headers={"host": "attacker.example:8000"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_HOST"
        for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000"):
            assert (await c.get("/api/v1/status", headers={"host": host})).status_code == 200


async def test_allowed_hosts_setting_admits_a_proxy_name() -> None:
    async with app_client(allowed_hosts=["trader.internal"]) as c:
        assert (await c.get("/api/v1/status", headers={"host": "trader.internal"})).status_code == 200


async def test_state_changing_request_from_a_foreign_origin_is_rejected() -> None:
    async with app_client() as c:
        r = await c.post("/api/v1/run/stop", headers={"origin": "https://evil.example"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN_ORIGIN"
        same = await c.post("/api/v1/run/stop", headers={"origin": "http://127.0.0.1:8000"})
        assert same.status_code == 409  # reached the handler: nothing to stop


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x"])
async def test_non_json_bodies_on_writes_are_rejected_to_stop_browser_csrf(ctype: str) -> None:
    async with app_client() as c:
        r = await c.post(
            "/api/v1/run/backtest", content=b'{"strategy_name": "TestStrategy"}', headers={"content-type": ctype}
        )
        assert r.status_code == 415 and r.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
        assert (await c.get("/api/v1/status")).json()["status"] == "idle"


async def test_bodyless_writes_such_as_the_seed_curl_stop_still_work() -> None:
    async with app_client() as c:
        assert (await c.delete("/api/v1/run/reset")).status_code == 200


async def test_oversized_bodies_are_rejected_with_413() -> None:
    async with app_client(max_body_bytes=2048) as c:
        big = {**YEAR_1H, "strategy_params": {"pad": "x" * 5000}}
        r = await c.post("/api/v1/run/backtest", json=big)
        assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"

        async def chunks():  # no content-length: the cap applies while streaming
            for _ in range(5):
                yield b" " * 1000

        streamed = await c.post("/api/v1/run/backtest", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413


async def test_cors_is_off_by_default() -> None:
    async with app_client() as c:
        r = await c.options(
            "/api/v1/status", headers={"origin": "https://app.example", "access-control-request-method": "GET"}
        )
        assert "access-control-allow-origin" not in r.headers


async def test_cors_origins_setting_enables_cors_for_those_origins() -> None:
    async with app_client(cors_origins=["https://app.example"]) as c:
        r = await c.get("/api/v1/status", headers={"origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        posted = await c.post("/api/v1/run/stop", headers={"origin": "https://app.example"})
        assert posted.status_code == 409  # an allowed origin reaches the handler
        other = await c.get("/api/v1/status", headers={"origin": "https://other.example"})
        assert "access-control-allow-origin" not in other.headers


async def test_ui_is_served_with_a_csp_and_refuses_path_traversal() -> None:
    async with app_client() as c:
        page = await c.get("/ui")
        assert page.status_code == 200 and "<title>Cracktrader</title>" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert (await c.get("/ui/app.js")).status_code == 200
        for path in ("/ui/../web/app.py", "/ui/%2e%2e/%2e%2e/settings.py", "/ui/..%2f..%2fapp.py", "/ui/nope.js"):
            r = await c.get(path)
            assert r.status_code == 404 and "import" not in r.text, path


async def test_api_docs_work_offline_with_local_assets_only() -> None:
    async with app_client() as c:
        for path in ("/docs", "/redoc"):
            html = (await c.get(path)).text
            urls = re.findall(r"""(?:src|href)=["']([^"']+)""", html)
            assert urls and all(u.startswith("/") for u in urls), urls
            for url in urls:
                if url != "/openapi.json":
                    assert (await c.get(url)).status_code == 200, url
        spec = (await c.get("/openapi.json")).json()
        assert "/api/v1/run/backtest" in spec["paths"] and spec["info"]["title"] == "Cracktrader API"
