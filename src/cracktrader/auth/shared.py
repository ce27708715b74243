"""Which store the rate limits and revocation notices share: Redis, else PostgreSQL, else this process alone."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from cracktrader.auth.login_limiter import LoginLimits, LoginPolicy
from cracktrader.auth.rate_limit import RateLimit, RateLimiter
from cracktrader.notify import redis_client_name

__all__ = [
    "LocalRevocationNotices",
    "RevocationNotices",
    "SharedAuth",
    "announce_revocation",
    "client_name",
    "open_shared_auth",
]


class RevocationNotices(Protocol):
    """Carries "something was revoked" from the process that did it to every other one."""

    async def publish(self) -> None:
        """Announce a revocation this process made."""
        ...

    async def start(self, on_notice: Callable[[], None]) -> None:
        """Start listening; `on_notice` runs for each notice."""
        ...

    async def close(self) -> None:
        """Stop listening."""
        ...


class LocalRevocationNotices:
    """One process (SQLite): its own revocations already drop its caches; nobody else to tell."""

    async def publish(self) -> None:
        """Nothing to do."""

    async def start(self, on_notice: Callable[[], None]) -> None:
        """Nothing to listen to."""

    async def close(self) -> None:
        """Nothing to close."""


@dataclass
class SharedAuth:
    """The rate limiter, login limiter and revocation notices in use; `login_limiter` None keeps this process's."""

    backend: str
    rate_limiter: RateLimit
    login_limiter: LoginLimits | None
    notices: RevocationNotices
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        """Stop listening and close the connections this opened."""
        await self.notices.close()
        for closer in self._closers:
            await closer()


def client_name(prefix: str) -> str:
    """The Redis client name of a deployment's connections (Redis names take no spaces)."""
    return redis_client_name(f"{prefix}auth")


async def open_shared_auth(
    *, redis_url: str | None, redis_prefix: str, engine: AsyncEngine, per_minute: int, login: LoginPolicy
) -> SharedAuth:
    """Redis when `redis_url` is set, else PostgreSQL when the database is, else in-process counters."""
    if redis_url:
        from redis.asyncio import Redis

        from cracktrader.auth.redis_shared import RedisLoginLimiter, RedisRateLimiter, RedisRevocationNotices

        # Named, so an operator (or a test) can tell this server's connections apart in CLIENT LIST.
        client = Redis.from_url(redis_url, client_name=client_name(redis_prefix))
        await client.ping()  # a wrong URL stops the server at start, not at the first request
        return SharedAuth(
            "redis",
            RedisRateLimiter(client, per_minute, prefix=redis_prefix),
            RedisLoginLimiter(client, login, prefix=redis_prefix),
            RedisRevocationNotices(client, prefix=redis_prefix),
            [client.aclose],
        )
    if engine.dialect.name == "postgresql":
        from cracktrader.auth.pg_shared import PostgresLoginLimiter, PostgresRateLimiter, PostgresRevocationNotices

        return SharedAuth(
            "postgresql",
            PostgresRateLimiter(engine, per_minute),
            PostgresLoginLimiter(engine, login),
            PostgresRevocationNotices(engine),
        )
    return SharedAuth("local", RateLimiter(per_minute), None, LocalRevocationNotices())


async def announce_revocation(*, redis_url: str | None, redis_prefix: str, engine: AsyncEngine) -> None:
    """Tell the running servers of a revocation made outside them (the CLI), the way they tell each other."""
    shared = await open_shared_auth(
        redis_url=redis_url, redis_prefix=redis_prefix, engine=engine, per_minute=0, login=LoginPolicy()
    )
    try:
        await shared.notices.publish()
    finally:
        await shared.close()
