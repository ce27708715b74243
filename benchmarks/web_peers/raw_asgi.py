"""Peer: a raw ASGI app answering a fixed status JSON (the ceiling for uvicorn on this machine)."""

import json

BODY = json.dumps({"run_id": None, "status": "idle", "mode": None}).encode()


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY})
