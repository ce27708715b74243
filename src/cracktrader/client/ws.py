"""WebSocket streams: `/ws/status` as typed `Event`s and `/ws` channel subscriptions as `ChannelMessage`s.

`websockets` is imported when a stream connects, so REST-only use of the SDK needs nothing but httpx.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import time
from collections import deque
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pydantic

from cracktrader.client._common import USER_AGENT, ClientConfig
from cracktrader.client.errors import (
    ConnectionError,
    CrackTraderError,
    InvalidResponseError,
    StreamClosedError,
    TimeoutError,
    ValidationError,
    error_from_response,
)
from cracktrader.client.models import ChannelMessage, Event

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection as AsyncConnection
    from websockets.sync.client import ClientConnection as SyncConnection

__all__ = ["AsyncChannelStream", "AsyncEventStream", "ChannelStream", "EventStream"]

STATUS_PATH = "/ws/status"
CHANNELS_PATH = "/ws"
# Replies to our own messages: consumed while subscribing, never yielded.
_CONTROL_CHANNELS = frozenset({"subscribed", "unsubscribed", "pong"})


# Decoding (shared by the sync and async streams) ---------------------------------------------------------


def _decode(text: str | bytes) -> dict[str, Any]:
    try:
        msg = json.loads(text)
    except ValueError as exc:
        raise InvalidResponseError(f"The stream sent a message that is not JSON: {str(text)[:200]!r}") from exc
    if not isinstance(msg, dict):
        raise InvalidResponseError(f"The stream sent a message that is not a JSON object: {str(text)[:200]!r}")
    return msg


def _event(msg: dict[str, Any], heartbeats: bool) -> Event | None:
    """The typed event, or None for a heartbeat nobody asked for."""
    try:
        event = Event.model_validate(msg)
    except pydantic.ValidationError as exc:
        raise InvalidResponseError(f"The status stream sent a message that is not an event: {msg!r:.200}") from exc
    return None if event.type == "heartbeat" and not heartbeats else event


def _channel_message(msg: dict[str, Any], heartbeats: bool) -> ChannelMessage | None:
    """The message as `(channel, data)`, or None for control replies and unwanted heartbeats."""
    channel = msg.get("channel")
    if not isinstance(channel, str):
        raise InvalidResponseError(f"The channel stream sent a message without a channel: {msg!r:.200}")
    if channel in _CONTROL_CHANNELS or (channel == "heartbeat" and not heartbeats):
        return None
    data = msg.get("data")
    return ChannelMessage(channel, data if isinstance(data, dict) else {"value": data})


def _status_query(run_id: str | None, candles: bool, since: int | None = None) -> str:
    """`/ws/status`'s query: the run followed, with `candles` the sessions' closed candles too, and with `since` the
    event number to resume after."""
    params: dict[str, str] = {} if run_id is None else {"run_id": run_id}
    if candles:
        params["candles"] = "true"
    if since is not None:
        if run_id is None or run_id == "*":
            raise ValueError("since resumes one run's stream: pass run_id too")
        params["since"] = str(since)
    return urlencode(params)


def _subscribe_message(action: str, channels: Iterable[str], symbol: str | None) -> str:
    names = [channels] if isinstance(channels, str) else list(channels)
    message: dict[str, Any] = {"action": action, "channels": names}
    if symbol is not None:
        message["symbol"] = symbol
    return json.dumps(message)


def _protocol_error(data: Any) -> ValidationError:
    """The server's `{"channel": "error"}` reply to a message of ours."""
    data = data if isinstance(data, dict) else {}
    return ValidationError(
        str(data.get("message") or "The server refused the message"),
        code=str(data.get("code") or "INVALID_MESSAGE"),
        details=data.get("details") if isinstance(data.get("details"), dict) else {},
    )


def _handshake_error(exc: BaseException, url: str) -> CrackTraderError:
    """The SDK error of a WebSocket that could not be opened."""
    from websockets.exceptions import InvalidStatus

    if isinstance(exc, InvalidStatus):
        response = exc.response
        headers: Mapping[str, str] = {k.lower(): v for k, v in response.headers.raw_items()}
        return error_from_response(response.status_code, headers, bytes(response.body or b""), method="GET", url=url)
    if isinstance(exc, builtins.TimeoutError):
        return TimeoutError(f"Opening {url} timed out", details={"url": url})
    return ConnectionError(f"Cannot open the stream {url}: {exc or type(exc).__name__}", details={"url": url})


def _closed_error(exc: BaseException, url: str) -> StreamClosedError:
    rcvd = getattr(exc, "rcvd", None)
    code = getattr(rcvd, "code", None)
    reason = getattr(rcvd, "reason", "") or ""
    message = f"The stream {url} closed" + (f" with code {code}" if code is not None else " abnormally")
    return StreamClosedError(
        message + (f": {reason}" if reason else ""), details={"close_code": code, "reason": reason}
    )


class _StreamState:
    """Settings and buffers common to every stream."""

    def __init__(
        self, config: ClientConfig, path: str, *, heartbeats: bool, open_timeout: float | None, query: str = ""
    ) -> None:
        self.url = config.ws_url(path, query)
        self._public_url = self.url.split("?", 1)[0]  # never put the token in an error message
        self.headers = config.ws_headers()
        self.heartbeats = heartbeats
        self.open_timeout = open_timeout
        self.closed = False
        self.pending: deque[ChannelMessage] = deque()
        self.subscriptions: list[dict[str, Any]] = []

    def remaining(self, deadline: float | None) -> float | None:
        """Seconds left until `deadline` (None: no limit); raises TimeoutError once it has passed."""
        if deadline is None:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"No message from {self._public_url} in time")
        return left


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


# Sync ----------------------------------------------------------------------------------------------------


class _SyncStream(_StreamState):
    """A blocking WebSocket connection opened on first use."""

    _ws: SyncConnection | None = None

    def __init__(
        self, config: ClientConfig, path: str, *, heartbeats: bool, open_timeout: float | None, query: str = ""
    ) -> None:
        super().__init__(config, path, heartbeats=heartbeats, open_timeout=open_timeout, query=query)
        self._stack = contextlib.ExitStack()

    def _connection(self) -> SyncConnection:
        if self.closed:
            raise StreamClosedError(f"The stream {self._public_url} is closed", code="STREAM_ENDED")
        if self._ws is None:
            from websockets.sync.client import connect

            try:
                # Entered as a context manager: websockets 17 deprecates using a bare connect() result.
                self._ws = self._stack.enter_context(
                    connect(
                        self.url,
                        additional_headers=self.headers,
                        user_agent_header=USER_AGENT,
                        open_timeout=self.open_timeout,
                    )
                )
            except Exception as exc:
                self.closed = True
                raise _handshake_error(exc, self._public_url) from exc
            try:
                self._on_open()
            except BaseException:
                # A refused initial subscription must not leave the socket open behind a failed `with`.
                self.close()
                raise
        return self._ws

    def _on_open(self) -> None:
        """Hook run once the socket is open."""

    def _read(self, deadline: float | None) -> dict[str, Any] | None:
        """The next decoded message, or None when the server closed the stream normally."""
        from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK

        ws = self._connection()
        try:
            text = ws.recv(timeout=self.remaining(deadline))
        except builtins.TimeoutError as exc:
            if isinstance(exc, CrackTraderError):
                raise
            raise TimeoutError(f"No message from {self._public_url} in time") from exc
        except ConnectionClosedOK:
            self.close()
            return None
        except ConnectionClosedError as exc:
            self.close()
            raise _closed_error(exc, self._public_url) from exc
        return _decode(text)

    def close(self) -> None:
        """Close the socket; iteration then ends."""
        self.closed = True
        self._ws = None
        self._stack.close()


class EventStream(_SyncStream):
    """Blocking iterator over `/api/v1/ws/status` events: a `snapshot` first, then updates as they happen."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        heartbeats: bool = False,
        open_timeout: float | None = 10.0,
        run_id: str | None = None,
        candles: bool = False,
        since: int | None = None,
    ) -> None:
        # `run_id`: one run (a backtest or a session), or "*" for all of the caller's; None: the runner slot.
        # `since`: with one run, resume after that event number (`Event.seq`): exactly what was missed, then live.
        query = _status_query(run_id, candles, since)
        super().__init__(config, STATUS_PATH, heartbeats=heartbeats, open_timeout=open_timeout, query=query)

    def connect(self) -> EventStream:
        """Open the socket now rather than on the first read."""
        self._connection()
        return self

    def recv(self, timeout: float | None = None) -> Event:
        """The next event; TimeoutError after `timeout` seconds, StreamClosedError once the stream ended."""
        deadline = _deadline(timeout)
        while True:
            msg = self._read(deadline)
            if msg is None:
                raise StreamClosedError(f"The stream {self._public_url} ended", code="STREAM_ENDED")
            event = _event(msg, self.heartbeats)
            if event is not None:
                return event

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> Event:
        if self.closed:
            raise StopIteration
        try:
            return self.recv()
        except StreamClosedError as exc:
            if exc.code == "STREAM_ENDED":
                raise StopIteration from None
            raise

    def __enter__(self) -> EventStream:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()


class ChannelStream(_SyncStream):
    """Blocking iterator over `/api/v1/ws` subscriptions, yielding `ChannelMessage(channel, data)`."""

    def __init__(
        self,
        config: ClientConfig,
        channels: Iterable[str],
        symbol: str | None = None,
        *,
        heartbeats: bool = False,
        open_timeout: float | None = 10.0,
    ) -> None:
        super().__init__(config, CHANNELS_PATH, heartbeats=heartbeats, open_timeout=open_timeout)
        self._initial = ([channels] if isinstance(channels, str) else list(channels), symbol)

    def _on_open(self) -> None:
        channels, symbol = self._initial
        if channels:
            self.subscribe(channels, symbol)

    def connect(self) -> ChannelStream:
        """Open the socket and subscribe now rather than on the first read."""
        self._connection()
        return self

    def subscribe(self, channels: Iterable[str], symbol: str | None = None) -> list[dict[str, Any]]:
        """Add subscriptions; returns all of them once the server confirmed (ValidationError if refused)."""
        return self._change("subscribe", channels, symbol)

    def unsubscribe(self, channels: Iterable[str], symbol: str | None = None) -> list[dict[str, Any]]:
        """Remove subscriptions; returns the remaining ones."""
        return self._change("unsubscribe", channels, symbol)

    def _change(self, action: str, channels: Iterable[str], symbol: str | None) -> list[dict[str, Any]]:
        ws = self._connection()
        ws.send(_subscribe_message(action, channels, symbol))
        deadline = _deadline(self.open_timeout)
        # Messages arriving before the acknowledgement are kept for the iterator, in order.
        while True:
            msg = self._read(deadline)
            if msg is None:
                raise StreamClosedError(f"The stream {self._public_url} ended before the server answered")
            if msg.get("channel") == f"{action}d":
                self.subscriptions = list((msg.get("data") or {}).get("subscriptions", []))
                return self.subscriptions
            if msg.get("channel") == "error":
                raise _protocol_error(msg.get("data"))
            item = _channel_message(msg, self.heartbeats)
            if item is not None:
                self.pending.append(item)

    def recv(self, timeout: float | None = None) -> ChannelMessage:
        """The next message; TimeoutError after `timeout` seconds, StreamClosedError once the stream ended."""
        if not self.pending:
            self._connection()  # opening subscribes, which may already buffer messages
        if self.pending:
            return self.pending.popleft()
        deadline = _deadline(timeout)
        while True:
            msg = self._read(deadline)
            if msg is None:
                raise StreamClosedError(f"The stream {self._public_url} ended", code="STREAM_ENDED")
            item = _channel_message(msg, self.heartbeats)
            if item is not None:
                return item

    def __iter__(self) -> ChannelStream:
        return self

    def __next__(self) -> ChannelMessage:
        if self.closed and not self.pending:
            raise StopIteration
        try:
            return self.recv()
        except StreamClosedError as exc:
            if exc.code == "STREAM_ENDED":
                raise StopIteration from None
            raise

    def __enter__(self) -> ChannelStream:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()


# Async ---------------------------------------------------------------------------------------------------


class _AsyncStream(_StreamState):
    """An asyncio WebSocket connection opened on first use."""

    _ws: AsyncConnection | None = None

    async def _connection(self) -> AsyncConnection:
        if self.closed:
            raise StreamClosedError(f"The stream {self._public_url} is closed", code="STREAM_ENDED")
        if self._ws is None:
            from websockets.asyncio.client import connect

            try:
                self._ws = await connect(
                    self.url,
                    additional_headers=self.headers,
                    user_agent_header=USER_AGENT,
                    open_timeout=self.open_timeout,
                )
            except Exception as exc:
                self.closed = True
                raise _handshake_error(exc, self._public_url) from exc
            try:
                await self._on_open()
            except BaseException:
                await self.aclose()
                raise
        return self._ws

    async def _on_open(self) -> None:
        """Hook run once the socket is open."""

    async def _read(self, deadline: float | None) -> dict[str, Any] | None:
        """The next decoded message, or None when the server closed the stream normally."""
        from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK

        ws = await self._connection()
        try:
            async with asyncio.timeout(self.remaining(deadline)):
                text = await ws.recv()
        except builtins.TimeoutError as exc:
            if isinstance(exc, CrackTraderError):
                raise
            raise TimeoutError(f"No message from {self._public_url} in time") from exc
        except ConnectionClosedOK:
            await self.aclose()
            return None
        except ConnectionClosedError as exc:
            await self.aclose()
            raise _closed_error(exc, self._public_url) from exc
        return _decode(text)

    async def aclose(self) -> None:
        """Close the socket; iteration then ends."""
        self.closed = True
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()


class AsyncEventStream(_AsyncStream):
    """`async for` over `/api/v1/ws/status` events: a `snapshot` first, then updates as they happen."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        heartbeats: bool = False,
        open_timeout: float | None = 10.0,
        run_id: str | None = None,
        candles: bool = False,
        since: int | None = None,
    ) -> None:
        # `run_id`: one run (a backtest or a session), or "*" for all of the caller's; None: the runner slot.
        # `since`: with one run, resume after that event number (`Event.seq`): exactly what was missed, then live.
        query = _status_query(run_id, candles, since)
        super().__init__(config, STATUS_PATH, heartbeats=heartbeats, open_timeout=open_timeout, query=query)

    async def connect(self) -> AsyncEventStream:
        """Open the socket now rather than on the first read."""
        await self._connection()
        return self

    async def recv(self, timeout: float | None = None) -> Event:
        """The next event; TimeoutError after `timeout` seconds, StreamClosedError once the stream ended."""
        deadline = _deadline(timeout)
        while True:
            msg = await self._read(deadline)
            if msg is None:
                raise StreamClosedError(f"The stream {self._public_url} ended", code="STREAM_ENDED")
            event = _event(msg, self.heartbeats)
            if event is not None:
                return event

    def __aiter__(self) -> AsyncEventStream:
        return self

    async def __anext__(self) -> Event:
        if self.closed:
            raise StopAsyncIteration
        try:
            return await self.recv()
        except StreamClosedError as exc:
            if exc.code == "STREAM_ENDED":
                raise StopAsyncIteration from None
            raise

    async def __aenter__(self) -> AsyncEventStream:
        return await self.connect()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class AsyncChannelStream(_AsyncStream):
    """`async for` over `/api/v1/ws` subscriptions, yielding `ChannelMessage(channel, data)`."""

    def __init__(
        self,
        config: ClientConfig,
        channels: Iterable[str],
        symbol: str | None = None,
        *,
        heartbeats: bool = False,
        open_timeout: float | None = 10.0,
    ) -> None:
        super().__init__(config, CHANNELS_PATH, heartbeats=heartbeats, open_timeout=open_timeout)
        self._initial = ([channels] if isinstance(channels, str) else list(channels), symbol)

    async def _on_open(self) -> None:
        channels, symbol = self._initial
        if channels:
            await self.subscribe(channels, symbol)

    async def connect(self) -> AsyncChannelStream:
        """Open the socket and subscribe now rather than on the first read."""
        await self._connection()
        return self

    async def subscribe(self, channels: Iterable[str], symbol: str | None = None) -> list[dict[str, Any]]:
        """Add subscriptions; returns all of them once the server confirmed (ValidationError if refused)."""
        return await self._change("subscribe", channels, symbol)

    async def unsubscribe(self, channels: Iterable[str], symbol: str | None = None) -> list[dict[str, Any]]:
        """Remove subscriptions; returns the remaining ones."""
        return await self._change("unsubscribe", channels, symbol)

    async def _change(self, action: str, channels: Iterable[str], symbol: str | None) -> list[dict[str, Any]]:
        ws = await self._connection()
        await ws.send(_subscribe_message(action, channels, symbol))
        deadline = _deadline(self.open_timeout)
        while True:
            msg = await self._read(deadline)
            if msg is None:
                raise StreamClosedError(f"The stream {self._public_url} ended before the server answered")
            if msg.get("channel") == f"{action}d":
                self.subscriptions = list((msg.get("data") or {}).get("subscriptions", []))
                return self.subscriptions
            if msg.get("channel") == "error":
                raise _protocol_error(msg.get("data"))
            item = _channel_message(msg, self.heartbeats)
            if item is not None:
                self.pending.append(item)

    async def recv(self, timeout: float | None = None) -> ChannelMessage:
        """The next message; TimeoutError after `timeout` seconds, StreamClosedError once the stream ended."""
        if not self.pending:
            await self._connection()  # opening subscribes, which may already buffer messages
        if self.pending:
            return self.pending.popleft()
        deadline = _deadline(timeout)
        while True:
            msg = await self._read(deadline)
            if msg is None:
                raise StreamClosedError(f"The stream {self._public_url} ended", code="STREAM_ENDED")
            item = _channel_message(msg, self.heartbeats)
            if item is not None:
                return item

    def __aiter__(self) -> AsyncChannelStream:
        return self

    async def __anext__(self) -> ChannelMessage:
        if self.closed and not self.pending:
            raise StopAsyncIteration
        try:
            return await self.recv()
        except StreamClosedError as exc:
            if exc.code == "STREAM_ENDED":
                raise StopAsyncIteration from None
            raise

    async def __aenter__(self) -> AsyncChannelStream:
        return await self.connect()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
