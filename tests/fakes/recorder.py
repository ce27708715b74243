"""A loopback HTTP server that records every request and answers with a fixed JSON body."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    body: str
    headers: dict[str, str]

    def fields(self) -> dict[str, Any]:
        """Query, JSON body and form body merged: where an exchange's client sent its parameters."""
        out: dict[str, Any] = dict(self.query)
        if self.body:
            try:
                parsed = json.loads(self.body)
            except ValueError:
                out.update(parse_qsl(self.body, keep_blank_values=True))
            else:
                if isinstance(parsed, list) and parsed and isinstance(parsed[0], dict):
                    parsed = parsed[0]  # okx sends a batch of one order
                if isinstance(parsed, dict):
                    out.update(parsed)
        return out


class RecordingServer:
    """Records requests on 127.0.0.1:<random port>; every answer is `status` with JSON `body`."""

    def __init__(self, status: int = 200, body: Any = None) -> None:
        self.status = status
        self.body: Any = {} if body is None else body
        self.requests: list[Recorded] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> RecordingServer:
        """Start serving in a daemon thread; returns self."""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                parts = urlsplit(self.path)
                owner.requests.append(
                    Recorded(self.command, parts.path, dict(parse_qsl(parts.query, keep_blank_values=True)), body,
                             dict(self.headers.items()))
                )  # fmt: skip
                payload = json.dumps(owner.body).encode()
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = do_PUT = _record

            def log_message(self, format: str, *args: Any) -> None:
                return  # quiet: the test reads self.requests

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="recording-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> RecordingServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        if self._server is None:
            raise RuntimeError("recording server is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"
