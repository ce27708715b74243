"""The web API (FastAPI), WebSocket streams and the local dashboard."""

from __future__ import annotations

from typing import Any


def start_web_server(**kwargs: Any) -> None:
    """Run the API server (same options as `cracktrader serve`: host, port, log_level, workers, insecure)."""
    from cracktrader.web.server.main import run_server

    run_server(**kwargs)


__all__ = ["start_web_server"]
