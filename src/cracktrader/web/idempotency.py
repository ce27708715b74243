"""`Idempotency-Key` on start requests: a retry with the same key answers the same run instead of starting a second.

The key is claimed in the database before anything starts (its primary key lets exactly one request be first,
across every server process), then answered with the run it started. A retry with the same key and body gets that
answer with `Idempotent-Replayed: true`; the same key with another body is refused; a retry while the first is
still being answered gets 409 and tries again shortly.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Response

from cracktrader.db.idempotency_store import IdempotencyStore
from cracktrader.errors import CracktraderError
from cracktrader.runs.sanitize import redact
from cracktrader.web.deps import RunsDep

__all__ = ["IDEMPOTENCY_HEADER", "REPLAYED_HEADER", "IdempotencyDep", "IdempotentStart"]

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
KEY_TTL = timedelta(hours=24)
_KEY = re.compile(r"[!-~]{1,255}")  # printable ASCII, no spaces: what a UUID, a ULID or a client's own id looks like


class InvalidIdempotencyKeyError(CracktraderError):
    code = "INVALID_IDEMPOTENCY_KEY"
    status_code = 422


class IdempotencyKeyReusedError(CracktraderError):
    code = "IDEMPOTENCY_KEY_REUSED"
    status_code = 422


class IdempotencyKeyInUseError(CracktraderError):
    code = "IDEMPOTENCY_KEY_IN_USE"
    status_code = 409


def fingerprint(route: str, body: dict[str, Any]) -> str:
    """SHA-256 of the route and the body as it may be stored (secrets masked by the one redaction rule)."""
    canonical = json.dumps({"route": route, "body": redact(body)}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotentStart:
    """Runs a start request once per (user, key): the first starts it, a retry gets the first one's answer."""

    def __init__(self, store: IdempotencyStore | None, user_id: int | None, key: str | None) -> None:
        self.store = store
        self.user_id = user_id or 0
        self.key = key

    async def __call__(
        self,
        *,
        route: str,
        body: dict[str, Any],
        response: Response,
        start: Callable[[], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        """The answer of `start()`, or of the earlier request with this key and body."""
        if self.key is None or self.store is None:
            return await start()
        key, user_id = self.key, self.user_id
        digest = fingerprint(route, body)
        earlier = await self.store.claim(user_id=user_id, key=key, fingerprint=digest, now=datetime.now(UTC))
        if earlier is not None:
            if earlier.fingerprint != digest:
                raise IdempotencyKeyReusedError(
                    f"The {IDEMPOTENCY_HEADER} was used with another request; send a new key for a new run",
                    details={"key": key},
                )
            if earlier.response is None:
                raise IdempotencyKeyInUseError(
                    f"A request with this {IDEMPOTENCY_HEADER} is still being answered; retry in a moment",
                    details={"key": key, "retry_after_s": 1},
                )
            response.headers[REPLAYED_HEADER] = "true"
            return dict(earlier.response)
        try:
            answer = await start()
        except BaseException:
            await self.store.release(user_id=user_id, key=key)  # nothing started: a retry may start it
            raise
        await self.store.answer(user_id=user_id, key=key, run_id=str(answer["run_id"]), response=answer)
        return answer


def _key(
    value: Annotated[
        str | None,
        Header(
            alias=IDEMPOTENCY_HEADER,
            description="A key of yours for this start (1-255 printable ASCII characters): a retry with the same "
            "key and body returns the same run instead of starting another, for 24 hours",
        ),
    ] = None,
) -> str | None:
    if value is None:
        return None
    if not _KEY.fullmatch(value):
        raise InvalidIdempotencyKeyError(
            f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters without spaces",
            details={"length": len(value), "max_length": MAX_KEY_LENGTH},
        )
    return value


def get_idempotent_start(request: Request, runs: RunsDep, key: Annotated[str | None, Depends(_key)]) -> IdempotentStart:
    """The idempotent start of this request, for its caller's user."""
    store: IdempotencyStore | None = getattr(request.app.state, "idempotency_store", None)
    return IdempotentStart(store, runs.slot.user_id, key)


IdempotencyDep = Annotated[IdempotentStart, Depends(get_idempotent_start)]
