"""SIGTERM on a real server process: its WebSocket streams close with 1001 (going away), then it shuts down."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from web_support import ServerProcess

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_sigterm_closes_every_stream_with_1001_and_the_server_shuts_down_fully(tmp_path: Path) -> None:
    server = await asyncio.to_thread(ServerProcess({}, tmp_path / "server.log").start)
    try:
        ws_url = server.base_url.replace("http://", "ws://")
        async with (
            connect(f"{ws_url}/api/v1/ws/status") as status,
            connect(f"{ws_url}/api/v1/ws") as channels,
        ):
            assert "snapshot" in await asyncio.wait_for(status.recv(), 10)
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            codes = []
            for ws in (status, channels):
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await asyncio.wait_for(ws.recv(), 30)
                assert closed.value.rcvd is not None, "closed without a close frame"
                codes.append((closed.value.rcvd.code, closed.value.rcvd.reason))
        assert codes == [(1001, "server shutting down; reconnect")] * 2
        # uvicorn re-raises the signal once it has shut down, so the exit is the signal's, after a full shutdown.
        assert await asyncio.to_thread(server.proc.wait, 30) in (0, -signal.SIGTERM)
    finally:
        server.kill()
    log = server.log.read_text()
    assert "Closed 2 WebSocket stream(s) with 1001" in log and "Application shutdown complete" in log
