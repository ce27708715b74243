"""A dropped ccxt.pro socket's unawaited futures are not reported as loop errors; everything else still is."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import aiohttp
import ccxt
from ccxt.async_support.base.ws.future import Future

from cracktrader.exchanges.socket_futures import quiet_rejected_socket_futures


def _reports(reject_with: BaseException) -> list[dict[str, Any]]:
    """What reaches the loop's earlier exception handler when a rejected ccxt future is collected unawaited."""
    seen: list[dict[str, Any]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: seen.append(context))
        quiet_rejected_socket_futures(loop)
        quiet_rejected_socket_futures(loop)  # once per loop: not wrapped twice
        future: Future = Future()
        future.reject(reject_with)
        del future
        gc.collect()
        await asyncio.sleep(0)

    asyncio.run(main())
    return seen


def test_a_closed_sockets_unawaited_network_error_is_not_reported() -> None:
    assert _reports(ccxt.NetworkError("Connection closed by remote server, closing code 1006")) == []


def test_a_subscription_rejected_with_aiohttps_connection_error_is_not_reported() -> None:
    # binance's user-data `authenticate` rejects its own future with what `send` raised on a closing socket
    assert _reports(aiohttp.ClientConnectionResetError("Cannot write to closing transport")) == []


def test_any_other_unretrieved_error_still_reaches_the_earlier_handler() -> None:
    seen = _reports(ValueError("a real bug"))
    assert [type(c["exception"]) for c in seen] == [ValueError]
