"""Every request example the OpenAPI document prints is accepted by the server as printed.

The examples are read from a live app's `/openapi.json`: a media type's `example`/`examples`, a schema's own
`example`/`examples`, and bodies composed from the properties' `examples` (what Swagger UI's "Try it out" fills
in). Each is sent to an app with auth off on a fresh database, with `binance` served by a FakeBinance.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from web_support import app_client, wait_for_status

pytestmark = pytest.mark.anyio

# Answers that mean "accepted": success, or a documented refusal that is not about the body (busy, not built yet).
NOT_ABOUT_THE_BODY = {409, 501}
# Operations whose examples must exist, so a walker that finds nothing cannot pass.
MUST_HAVE_EXAMPLES = {
    ("POST", "/api/v1/strategies"),
    ("PUT", "/api/v1/strategies/{strategy_id}"),
    ("POST", "/api/v1/run/backtest"),
    ("POST", "/api/v1/strategies/{strategy_ref}/check"),
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with `$ref`s followed and a nullable `anyOf` reduced to its non-null branch."""
    while True:
        if "$ref" in schema:
            node: Any = spec
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            schema = node
        elif "anyOf" in schema and not schema.get("examples"):
            branches = [b for b in schema["anyOf"] if b.get("type") != "null"]
            if len(branches) != 1:
                return schema
            schema = branches[0]
        else:
            return schema


def _composed(spec: dict[str, Any], schema: dict[str, Any], k: int) -> Any:
    """The k-th example of `schema`: its own, else an object of its properties' examples; None if it has none."""
    schema = _resolve(spec, schema)
    own = schema.get("examples") or ([schema["example"]] if "example" in schema else [])
    if own:
        return own[min(k, len(own) - 1)]
    props = schema.get("properties")
    if not props:
        return None
    body = {}
    for name, prop in props.items():
        value = _composed(spec, prop, k)
        if value is not None:
            body[name] = value
    if not body:
        return None
    missing = [name for name in schema.get("required", []) if name not in body]
    assert not missing, f"{schema.get('title')} has examples but none for required {missing}"
    return body


def _depth(spec: dict[str, Any], schema: dict[str, Any]) -> int:
    """How many composed examples `schema` has (the longest `examples` list among it and its properties)."""
    schema = _resolve(spec, schema)
    own = schema.get("examples") or ([schema["example"]] if "example" in schema else [])
    if own:
        return len(own)
    return max((_depth(spec, p) for p in schema.get("properties", {}).values()), default=0)


def request_examples(spec: dict[str, Any]) -> list[tuple[str, str, str, Any]]:
    """(method, path, label, body) of every request-body example, in document order."""
    out: list[tuple[str, str, str, Any]] = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            for media_type, media in op.get("requestBody", {}).get("content", {}).items():
                label = f"{method.upper()} {path} {media_type}"
                if "example" in media:
                    out.append((method.upper(), path, f"{label} example", media["example"]))
                for name, example in media.get("examples", {}).items():
                    out.append((method.upper(), path, f"{label} examples.{name}", example["value"]))
                schema = media.get("schema", {})
                for k in range(_depth(spec, schema)):
                    out.append((method.upper(), path, f"{label} schema example {k}", _composed(spec, schema, k)))
    return out


def path_examples(spec: dict[str, Any]) -> dict[str, str]:
    """The first documented example of each path parameter that has one (a class name for `strategy_ref`)."""
    out: dict[str, str] = {}
    for operations in spec["paths"].values():
        for op in operations.values():
            for param in op.get("parameters", []):
                examples = param.get("schema", {}).get("examples")
                if param.get("in") == "path" and examples:
                    out.setdefault(param["name"], str(examples[0]))
    return out


def _url(path: str, ids: dict[str, str]) -> str | None:
    """`path` with its parameters filled from what earlier examples created; None if one is not known."""
    if any(name not in ids for name in re.findall(r"\{([^}]+)\}", path)):
        return None
    return re.sub(r"\{([^}]+)\}", lambda m: ids[m.group(1)], path)


async def test_every_documented_request_example_is_accepted_as_printed(fake_binance: Any) -> None:
    async with app_client() as c:
        spec = (await c.get("/openapi.json")).json()
        examples = request_examples(spec)
        assert {(m, p) for m, p, _, _ in examples} >= MUST_HAVE_EXAMPLES, examples
        ids: dict[str, str] = path_examples(spec)
        refused = []
        # Creations first, so the examples that change or delete something have something to act on.
        for method, path, label, body in sorted(examples, key=lambda e: e[0] != "POST"):
            url = _url(path, ids)
            if url is None:
                refused.append(f"{label}: not sent, no earlier example created what its path names")
                continue
            r = await c.request(method, url, json=body)
            accepted = 200 <= r.status_code < 300 or (
                r.status_code in NOT_ABOUT_THE_BODY
                and str(r.status_code) in spec["paths"][path][method.lower()]["responses"]
            )
            if not accepted:
                refused.append(f"{label}: {r.status_code} {r.text[:300]}\n  sent {body}")
            if (method, path) == ("POST", "/api/v1/strategies") and r.status_code == 201:
                ids["strategy_id"] = str(r.json()["id"])
            if (method, path) == ("POST", "/api/v1/run/backtest") and r.status_code == 200:
                await wait_for_status(c, {"completed", "failed", "stopped"})
                await c.delete("/api/v1/run/reset")
    assert not refused, "\n".join(refused)
