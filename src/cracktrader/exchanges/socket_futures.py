"""Quiet the futures a dropped ccxt.pro socket rejects that nobody awaits any more.

When a WebSocket closes, ccxt.pro rejects every future it holds for that socket with one `NetworkError`
(`Client.on_close` -> `reject`), including futures of subscriptions no coroutine waits on now. asyncio then reports
each of them as "Future exception was never retrieved" when it is collected: noise in the logs (and a failure
under a test runner that collects loop errors), not an error, since the watcher that matters already handled the
drop. A subscription whose request could not be written (binance's user-data `authenticate`) is rejected with
aiohttp's own connection error rather than ccxt's, so connection errors count too. Every other report goes to the
handler that was there before.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["quiet_rejected_socket_futures"]

log = logging.getLogger(__name__)
_INSTALLED = "_cracktrader_socket_futures_quiet"


def _is_dropped_socket_future(context: dict[str, Any]) -> bool:
    import aiohttp
    import ccxt

    future = context.get("future")
    exc = context.get("exception")
    return (
        isinstance(future, asyncio.Future)
        and not isinstance(future, asyncio.Task)
        and isinstance(exc, ccxt.NetworkError | ConnectionError | aiohttp.ClientConnectionError)
        and str(context.get("message", "")).startswith("Future exception was never retrieved")
    )


def quiet_rejected_socket_futures(loop: asyncio.AbstractEventLoop) -> None:
    """Install (once per loop) a handler that drops the unawaited futures of closed ccxt.pro sockets."""
    if getattr(loop, _INSTALLED, False):
        return
    previous = loop.get_exception_handler()

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if _is_dropped_socket_future(context):
            log.debug("a dropped socket's unawaited future: %s", context.get("exception"))
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    loop.set_exception_handler(handler)
    setattr(loop, _INSTALLED, True)
