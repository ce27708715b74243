"""The dashboard in a real DOM (jsdom under Node) against a live server with authentication on."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from auth_support import PASSWORD, SECRET
from cracktrader.auth import service
from cracktrader.auth.store import AuthStore
from cracktrader.db.engine import make_engine
from cracktrader.settings import get_settings
from web_support import LiveServer

JS_DIR = Path(__file__).resolve().parent / "js"


async def _create_user(username: str) -> None:
    store = AuthStore(make_engine(get_settings().database_url))
    try:
        await service.create_user(store=store, username=username, password=PASSWORD)
    finally:
        await store._engine.dispose()


def test_dashboard_asks_to_sign_in_then_loads_and_streams_with_the_token() -> None:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "jsdom").is_dir():
        pytest.fail("node and tests/js/node_modules/jsdom are required: run scripts/test.sh (it runs npm ci)")
    with LiveServer(auth_mode="on", jwt_secret_key=SECRET) as server:
        asyncio.run(_create_user("dana"))
        done = subprocess.run(
            [node, str(JS_DIR / "ui_login.js"), server.base_url, "dana", PASSWORD],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=JS_DIR,
        )
    assert done.returncode == 0, done.stderr
    page = json.loads(done.stdout)
    assert page["before"] == {"options": 0, "message": "Sign in to continue"}
    after = page["after"]
    assert after["options"] >= 9 and after["login_hidden"] is True and after["message"] == "Signed in"
    assert "snapshot" in after["first_event"] and after["token_stored"] and after["password_cleared"]
