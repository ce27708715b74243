"""Argon2 password hashing through pwdlib; the async variants run the hashing off the event loop."""

from __future__ import annotations

import asyncio
import secrets
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from cracktrader.auth.errors import WeakPasswordError

MIN_PASSWORD_LENGTH = 8
# Bounds the hashing work one request can ask for.
MAX_PASSWORD_LENGTH = 1024

_HASHER = PasswordHash((Argon2Hasher(),))
# Argon2 is CPU-bound by design. On asyncio's default pool (many threads) 1,000 logins starved the event loop:
# /status p99 went from 3 ms to 1.2 s (benchmarks/bench_auth.py). One dedicated thread keeps a core free for the
# loop (p99 10 ms) at the same login throughput on a 2-core machine; logins queue instead of the whole server.
_ARGON2_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="argon2")


@lru_cache(maxsize=1)
def dummy_hash() -> str:
    """A hash of a random password: verifying against it costs what a real check costs (unknown users)."""
    return _HASHER.hash(secrets.token_urlsafe(16))


def check_password_policy(password: str) -> None:
    """Refuse passwords that are too short or absurdly long."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPasswordError(f"Passwords need at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPasswordError(f"Passwords are limited to {MAX_PASSWORD_LENGTH} characters")


def hash_password(password: str) -> str:
    """The Argon2id hash of a password (blocking, ~tens of ms by design)."""
    return _HASHER.hash(password)


def verify_password(password: str, password_hash: str) -> tuple[bool, str | None]:
    """Whether the password matches, and a new hash when the stored one uses outdated parameters."""
    try:
        return _HASHER.verify_and_update(password[:MAX_PASSWORD_LENGTH], password_hash)
    except Exception:
        # A corrupt or foreign hash is a failed login, not a server error.
        return False, None


async def hash_password_async(password: str) -> str:
    """`hash_password` on the Argon2 thread, so the event loop keeps serving."""
    return await asyncio.get_running_loop().run_in_executor(_ARGON2_POOL, hash_password, password)


async def verify_password_async(password: str, password_hash: str) -> tuple[bool, str | None]:
    """`verify_password` on the Argon2 thread, so the event loop keeps serving."""
    return await asyncio.get_running_loop().run_in_executor(_ARGON2_POOL, verify_password, password, password_hash)
