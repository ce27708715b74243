"""The JavaScript SDK (cracktrader-js) under Node's test runner against a real uvicorn, with auth off and on.

The SDK lives in the Python package (src/cracktrader/web/static/sdk) and tests/js links it as the npm
dependency `cracktrader-js`, so the tests import it by its name, as users do. Node runs with
`--preserve-symlinks` so that the linked SDK finds `ws` in tests/js/node_modules rather than beside its source.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from auth_support import PASSWORD, SECRET
from cracktrader.auth import service
from cracktrader.auth.store import AuthStore
from cracktrader.db.engine import make_engine
from cracktrader.settings import get_settings
from web_support import LiveServer, live_server

ROOT = Path(__file__).resolve().parent.parent
JS_DIR = ROOT / "tests" / "js"
SDK_TESTS = JS_DIR / "sdk"
SDK_DIR = ROOT / "src" / "cracktrader" / "web" / "static" / "sdk"
SDK_DOC = ROOT / "docs" / "sdk.md"
DOC_URL = "http://127.0.0.1:8000"
NODE_TIMEOUT_S = 300  # a safety net: the suites take seconds


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: install Node.js 20+, then run scripts/test.sh (it runs npm ci)")
    for dep in ("ws", "cracktrader-js"):
        if not (JS_DIR / "node_modules" / dep / "package.json").is_file():
            pytest.fail(f"{dep} is not in tests/js/node_modules: run scripts/test.sh (or npm ci --prefix tests/js)")
    return node


def _env(base_url: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "CRACKTRADER_BASE_URL": base_url, "NODE_OPTIONS": "--preserve-symlinks", **extra}


def _node_test(base_url: str, *files: str, **extra: str) -> str:
    """Run `node --test` on the SDK's test files against a server; its TAP output, asserting every test passed."""
    done = subprocess.run(
        [_node(), "--test", "--test-reporter=tap", *(str(SDK_TESTS / f) for f in files)],
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        check=False,
        cwd=JS_DIR,
        env=_env(base_url, **extra),
    )
    out = done.stdout
    print(out)  # shown with `pytest -s`: which Node tests ran
    assert done.returncode == 0, out + done.stderr
    passed = re.search(r"^# pass (\d+)$", out, re.MULTILINE)
    assert passed and int(passed.group(1)) > 0 and re.search(r"^# fail 0$", out, re.MULTILINE), out
    return out


async def _create_user(username: str) -> None:
    store = AuthStore(make_engine(get_settings().database_url))
    try:
        await service.create_user(store=store, username=username, password=PASSWORD)
    finally:
        await store._engine.dispose()


def test_js_sdk_suite_with_auth_off_runs_backtests_maps_errors_and_streams() -> None:
    with live_server() as srv:
        out = _node_test(srv.base_url, "auth_off.test.mjs", "offline.test.mjs")
    for name in (
        "a backtest started, polled and its results read",
        "server errors are thrown as their typed classes with the envelope",
        "the status stream sends a snapshot, then the run's updates until it completes",
        "a download's progress streams as download_progress events, in order, until its last status",
        "an injected WebSocket (the browser's API) streams too",
        "a sweep started, waited for, paged by another metric, and its best row backtested",
        "a proxy's HTML error page still throws the class of its status",
    ):
        assert re.search(rf"^ok \d+ - {re.escape(name)}$", out, re.MULTILINE), out


def test_js_sdk_suite_with_auth_on_logs_in_uses_keys_and_streams_with_credentials() -> None:
    with LiveServer(auth_mode="on", jwt_secret_key=SECRET, rate_limit_per_minute=100_000) as srv:
        asyncio.run(_create_user("jo"))
        out = _node_test(srv.base_url, "auth_on.test.mjs", CT_USERNAME="jo", CT_PASSWORD=PASSWORD)
    assert re.search(r"^ok \d+ - an API key made by a login runs a backtest", out, re.M), out


def test_type_definitions_compile_strictly_and_reject_misuse() -> None:
    node = _node()
    tsc = JS_DIR / "node_modules" / "typescript" / "bin" / "tsc"
    if not tsc.is_file():
        pytest.fail("typescript is not in tests/js/node_modules: run scripts/test.sh (or npm ci --prefix tests/js)")
    # sdk/typecheck.mts uses the SDK as a TypeScript user would; its `@ts-expect-error` lines must be errors.
    done = subprocess.run(
        [node, str(tsc), "-p", str(SDK_TESTS / "tsconfig.json")],
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        check=False,
        cwd=JS_DIR,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _js_blocks(doc: Path = SDK_DOC) -> list[str]:
    return re.findall(r"```js\n(.*?)```", doc.read_text(), flags=re.DOTALL)


def _run_module(node: str, block: str, base_url: str) -> subprocess.CompletedProcess[str]:
    """Run a docs block as an ES module piped in: `cracktrader-js` then resolves from tests/js, the cwd."""
    return subprocess.run(
        [node, "--input-type=module"],
        input=block.replace(DOC_URL, base_url),
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        check=False,
        cwd=JS_DIR,
        env=_env(base_url),
    )


def test_sdk_doc_javascript_examples_run_as_printed_against_a_live_server() -> None:
    node = _node()
    blocks = _js_blocks()
    assert len(blocks) >= 3
    outputs = []
    with live_server() as srv:
        for number, block in enumerate(blocks, 1):
            assert "from 'cracktrader-js'" in block or 'from "cracktrader-js"' in block, f"block {number}"
            done = _run_module(node, block, srv.base_url)
            assert done.returncode == 0 and done.stderr == "", f"docs/sdk.md js block {number}:\n{done.stderr}"
            outputs.append(done.stdout)
    out = "".join(outputs)
    assert 'balance {"USDT":10000}' in out and "stopped stopped" in out, out
    assert re.search(r"^Final value: \$\d[\d,]*\.\d\d$", out, re.M), out
    assert "400 INVALID_SYMBOL BTC/USDT,ETH/USDT,SOL/USDT" in out and "snapshot idle" in out, out
    assert "RUN_ALREADY_ACTIVE true" in out and "NOT_FOUND No run with id 'no-such-run'" in out, out
    assert re.search(r"^completed after [1-9]\d* trade messages$", out, re.MULTILINE), out


def test_readme_and_sdk_readme_javascript_examples_run_against_a_live_server() -> None:
    node = _node()
    blocks = _js_blocks(ROOT / "README.md") + _js_blocks(SDK_DIR / "README.md")
    assert len(blocks) == 2
    with live_server() as srv:
        for block in blocks:
            done = _run_module(node, block, srv.base_url)
            assert done.returncode == 0 and done.stderr == "", done.stderr


def test_seed_001_javascript_example_is_in_the_docs_verbatim() -> None:
    text = "\n".join(_js_blocks())
    for line in (
        "import CrackTrader from 'cracktrader-js';",
        "const api = new CrackTrader({apiKey: 'your_key'});",
        "const balance = await api.getBalance();",
    ):
        assert line in text, line


def test_in_chromium_a_page_of_the_dashboard_imports_the_sdk_and_calls_and_streams_with_the_browsers_apis() -> None:
    node = _node()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("Chromium is not installed: apt-get install chromium")
    with live_server() as srv:
        done = subprocess.run(
            [node, str(SDK_TESTS / "browser.mjs"), chromium, srv.base_url],
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT_S,
            check=False,
            cwd=JS_DIR,
        )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    # The default base URL is the page's origin; fetch, WebSocket and the typed errors are the browser's.
    assert seen == {
        "baseUrl": srv.base_url,
        "status": "idle",
        "error": ["NotFoundError", 404, "NOT_FOUND"],
        "snapshot": "snapshot",
        "channel": "status",
        "nodeGlobals": False,
        "cspViolations": 0,
    }


def test_dashboard_serves_the_sdk_as_modules_under_a_strict_csp() -> None:
    with live_server() as srv, httpx.Client(base_url=srv.base_url) as c:
        js = c.get("/ui/sdk/index.js")
        types = c.get("/ui/sdk/index.d.ts")
        manifest = c.get("/ui/sdk/package.json")
        traversal = c.get("/ui/sdk/../app.js")
        outside = c.get("/ui/sdk/%2e%2e/%2e%2e/app.py")
        missing = c.get("/ui/sdk/nothing.js")
    assert js.status_code == 200 and js.content == (SDK_DIR / "index.js").read_bytes()
    assert js.headers["content-type"].startswith("text/javascript")
    csp = js.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert js.headers["x-content-type-options"] == "nosniff"
    assert types.status_code == 200 and types.headers["content-type"].startswith("text/plain")
    assert manifest.json()["name"] == "cracktrader-js"
    assert outside.status_code == 404 and missing.status_code == 404
    # httpx normalises `sdk/../app.js` to the UI's own app.js: nothing outside the shipped files either way.
    assert traversal.status_code == 200 and traversal.content == (SDK_DIR.parent / "ui" / "app.js").read_bytes()
