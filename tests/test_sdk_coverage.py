"""Every operation of the OpenAPI document has a typed method in both SDKs, through their explicit tables.

The Python SDK's table is `cracktrader.client.operations.OPERATIONS`, the JavaScript SDK's `OPERATIONS` in
src/cracktrader/web/static/sdk/index.js; both are keyed by "METHOD path". A new endpoint fails here until both
SDKs map it to a method (declared in index.d.ts and implemented in index.js for JavaScript; on the blocking and
the async client, with a return annotation, for Python).
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIWebSocketRoute

from cracktrader.client import AsyncCrackTraderAPI, CrackTraderAPI
from cracktrader.client.operations import OPERATIONS, STREAMS
from cracktrader.web.app import API_PREFIX, create_app
from cracktrader.web.ws.router import router as ws_router

SDK_DIR = Path(__file__).resolve().parent.parent / "src" / "cracktrader" / "web" / "static" / "sdk"
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


@cache
def _operations() -> frozenset[str]:
    document = create_app().openapi()
    return frozenset(
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    )


@cache
def _js_sdk() -> dict[str, Any]:
    """The JavaScript SDK's tables and the methods its class implements, read by Node from index.js itself."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: install Node.js 20+ (the JavaScript SDK's tests need it)")
    script = f"""
        const sdk = await import({json.dumps((SDK_DIR / "index.js").as_uri())});
        const proto = sdk.CrackTrader.prototype;
        const methods = Object.getOwnPropertyNames(proto).filter((n) => typeof proto[n] === "function");
        process.stdout.write(JSON.stringify({{operations: sdk.OPERATIONS, streams: sdk.STREAMS, methods}}));
    """
    done = subprocess.run(
        [node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@cache
def _declared_js_methods() -> frozenset[str]:
    """Method names declared on `class CrackTrader` in index.d.ts."""
    text = (SDK_DIR / "index.d.ts").read_text()
    body = text[text.index("export declare class CrackTrader {") :]
    body = body[: body.index("\n}\n")]
    return frozenset(re.findall(r"^  (\w+)(?:<[^>]*>)?\(", body, flags=re.MULTILINE))


def test_the_document_lists_the_operations_the_sdks_know() -> None:
    assert len(_operations()) >= 45
    assert "GET /api/v1/status" in _operations() and "POST /api/v1/run/backtest" in _operations()


@pytest.mark.parametrize("operation", sorted(_operations()))
def test_every_operation_has_a_typed_method_in_the_javascript_sdk(operation: str) -> None:
    sdk = _js_sdk()
    name = sdk["operations"].get(operation)
    assert name is not None, f"{operation} has no method in OPERATIONS of {SDK_DIR / 'index.js'}"
    assert name in sdk["methods"], f"{operation}: {name} is not implemented by CrackTrader in index.js"
    assert name in _declared_js_methods(), f"{operation}: {name} is not declared on CrackTrader in index.d.ts"


@pytest.mark.parametrize("operation", sorted(_operations()))
def test_every_operation_has_a_typed_method_in_the_python_sdk(operation: str) -> None:
    name = OPERATIONS.get(operation)
    assert name is not None, f"{operation} has no method in cracktrader.client.operations.OPERATIONS"
    for cls in (CrackTraderAPI, AsyncCrackTraderAPI):
        method = getattr(cls, name, None)
        assert callable(method), f"{operation}: {cls.__name__} has no method {name}"
        assert inspect.signature(method).return_annotation is not inspect.Signature.empty, f"{cls.__name__}.{name}"
    assert inspect.iscoroutinefunction(getattr(AsyncCrackTraderAPI, name)), f"AsyncCrackTraderAPI.{name} is not async"


def test_the_tables_name_no_operation_the_server_does_not_have_and_agree_on_the_streams() -> None:
    sdk = _js_sdk()
    assert set(OPERATIONS) - _operations() == set()
    assert set(sdk["operations"]) - _operations() == set()
    assert set(sdk["streams"]) == set(STREAMS) == {"/api/v1/ws/status", "/api/v1/ws"}
    for name in sdk["streams"].values():
        assert name in sdk["methods"] and name in _declared_js_methods()
    for name in STREAMS.values():
        assert callable(getattr(CrackTraderAPI, name)) and callable(getattr(AsyncCrackTraderAPI, name))


def test_the_stream_paths_are_the_servers_websocket_routes() -> None:
    websockets = {API_PREFIX + route.path for route in ws_router.routes if isinstance(route, APIWebSocketRoute)}
    assert websockets == set(STREAMS)
