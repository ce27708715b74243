"""Auth benchmarks: what checking a token or an API key costs, and /status latency during a storm of logins.

Targets of the issue: a token or API-key check costs < 50 µs per request, and 1,000 logins do not block
`/status` (its p99 stays < 50 ms while they run). Every server is a real uvicorn (one worker) on a loopback port
with a fresh SQLite database in a temporary CRACKTRADER_DATA_DIR; users and keys are made with
`cracktrader.auth.service`. Rate limiting is off (`CRACKTRADER_RATE_LIMIT_PER_MINUTE=0`) so it never answers 429.

.venv/bin/python benchmarks/bench_auth.py            # ~4 min, most of it Argon2 during the 1,000 logins
.venv/bin/python benchmarks/bench_auth.py --quick    # fewer repeats and 200 logins (~2 min)

bench_web.py runs it after its own table. Needs wrk for the HTTP rows (a slower Python loop stands in without it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from bench_web import percentile, serve
from benchlib import Row, Section, print_section

from cracktrader.auth import service
from cracktrader.auth.principal import Authenticator
from cracktrader.auth.store import AuthStore
from cracktrader.auth.tokens import TokenSettings, create_access_token
from cracktrader.db.engine import make_engine
from cracktrader.db.migrate import upgrade
from cracktrader.settings import Settings, default_database_url
from cracktrader.web.app import create_app
from cracktrader.web.config import WebSettings

SECRET = "bench-auth-secret-" + "0123456789abcdef" * 3
PASSWORD = "correct horse battery"
TARGET_CHECK_US = 50.0
TARGET_STATUS_P99_MS = 50.0
APP = "cracktrader.web.app:create_app"


@dataclass(frozen=True, slots=True)
class Seed:
    """What the fresh database holds: login users, one user for polling, and an API key."""

    url: str
    usernames: list[str]
    poll_user_id: int
    api_key: str
    # An access token from a real login (it carries `sid`, so checks include the login's revocation state).
    session_token: str


def server_env(data_dir: Path, *, auth: bool) -> dict[str, str]:
    """Environment for a uvicorn subprocess: its own data dir, auth on or off, no rate limit."""
    env = {
        "CRACKTRADER_DATA_DIR": str(data_dir),
        "CRACKTRADER_DATABASE_URL": default_database_url(data_dir),
        "CRACKTRADER_AUTH_MODE": "on" if auth else "off",
        "CRACKTRADER_RATE_LIMIT_PER_MINUTE": "0",
        "CRACKTRADER_LOG_LEVEL": "warning",
    }
    if auth:
        env["JWT_SECRET_KEY"] = SECRET
    return env


async def seed_database(data_dir: Path, n_users: int) -> Seed:
    """Migrate a fresh SQLite database and create users (Argon2, off the loop) and one API key through the service."""
    url = default_database_url(data_dir)
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    store = AuthStore(engine)
    try:
        names = [f"bench{i:03d}@example.com" for i in range(n_users)]
        await asyncio.gather(*(service.create_user(store=store, username=n, password=PASSWORD) for n in names))
        poller = await service.create_user(store=store, username="poller@example.com", password=PASSWORD)
        key, _ = await service.create_api_key(store=store, user_id=poller.id, name="bench", scopes=["read"])
        session = await service.issue_tokens(store=store, user=poller, settings=TokenSettings(secret=SECRET))
    finally:
        await engine.dispose()
    return Seed(url=url, usernames=names, poll_user_id=poller.id, api_key=key, session_token=session["access_token"])


# -- checks in process ---------------------------------------------------------------------------------------


async def per_call_us(
    fn: Callable[[], Awaitable[Any]], n: int, repeats: int, clock: Callable[[], float] = time.thread_time
) -> list[float]:
    """Microseconds per awaited call, one figure per repeat of `n` calls.

    The default clock is this thread's CPU time: time the scheduler gives to other processes (this machine is shared)
    is not charged to the call. Pass time.perf_counter for calls that wait on another thread (database lookups).
    """
    out = []
    for _ in range(repeats):
        gc.collect()
        t0 = clock()
        for _ in range(n):
            await fn()
        out.append((clock() - t0) / n * 1e6)
    return out


async def check_costs(seed: Seed, repeats: int) -> dict[str, list[float]]:
    """Cached bearer and API-key checks, a token's first sight (PyJWT decode) and a key's (SQLite lookup)."""
    engine = make_engine(seed.url)
    store = AuthStore(engine)
    settings = TokenSettings(secret=SECRET)
    try:
        auth = Authenticator(store=store, tokens=settings)
        token = seed.session_token
        await auth.from_bearer(token)  # warm: verified token, user and login in the cache
        await auth.from_api_key(seed.api_key)
        out = {
            "bearer_cached": await per_call_us(lambda: auth.from_bearer(token), 20_000, repeats),
            "api_key_cached": await per_call_us(lambda: auth.from_api_key(seed.api_key), 20_000, repeats),
            "bearer_first": [],
            "api_key_first": [],
        }
        for _ in range(repeats):
            # A new authenticator with its user cached: every token below is seen for the first time.
            fresh = Authenticator(store=store, tokens=settings)
            await fresh.user(seed.poll_user_id)
            tokens = [
                create_access_token(user_id=seed.poll_user_id, role="trader", settings=settings) for _ in range(2000)
            ]
            gc.collect()
            t0 = time.thread_time()
            for fresh_token in tokens:
                await fresh.from_bearer(fresh_token)
            out["bearer_first"].append((time.thread_time() - t0) / len(tokens) * 1e6)
        for _ in range(repeats):
            total = 0.0
            for _ in range(100):
                auth.forget_keys()
                t0 = time.perf_counter()
                await auth.from_api_key(seed.api_key)
                total += time.perf_counter() - t0
            out["api_key_first"].append(total / 100 * 1e6)
        return out
    finally:
        await engine.dispose()


async def asgi_costs(root: Path, seed: Seed, seed_dir: Path, repeats: int, n: int = 3000) -> dict[str, list[float]]:
    """GET /api/v1/auth/me straight into the ASGI app (every middleware, no network): µs per request, per mode."""
    token = seed.session_token
    on = WebSettings(auth_mode="on", jwt_secret_key=SECRET, rate_limit_per_minute=0)
    cases: dict[str, tuple[Path, WebSettings, list[tuple[bytes, bytes]]]] = {
        "off": (root / "asgi-off", WebSettings(auth_mode="off"), []),
        "bearer": (seed_dir, on, [(b"authorization", f"Bearer {token}".encode())]),
        "api_key": (seed_dir, on, [(b"x-api-key", seed.api_key.encode())]),
    }
    out: dict[str, list[float]] = {name: [] for name in cases}
    async with contextlib.AsyncExitStack() as stack:
        calls: dict[str, Callable[[], Awaitable[Any]]] = {}
        for name, (data_dir, web, headers) in cases.items():
            app = create_app(Settings(data_dir=data_dir, database_url=default_database_url(data_dir)), web)
            await stack.enter_async_context(app.router.lifespan_context(app))
            await app.state.manager.warm_up()  # queued behind the lifespan's own warm-up: both done after this
            calls[name] = _asgi_get(app, "/api/v1/auth/me", headers)
        for call in calls.values():
            await per_call_us(call, 200, 1)  # warm-up: routes, caches, the token's first sight
        for _ in range(repeats):  # interleaved so drifting machine load hits every mode alike
            for name, call in calls.items():
                out[name] += await per_call_us(call, n, 1)
    return out


def _asgi_get(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> Callable[[], Awaitable[None]]:
    """A coroutine function that sends one GET through the app and checks for 200."""
    scope_base = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, Any]:
        return request

    async def call() -> None:
        status: list[int] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(dict(scope_base), receive, send)
        if status != [200]:
            raise RuntimeError(f"GET {path} answered {status}")

    return call


# -- end to end over HTTP ------------------------------------------------------------------------------------


@contextlib.contextmanager
def server(data_dir: Path, *, auth: bool) -> Iterator[tuple[str, int]]:
    """bench_web's uvicorn subprocess (one worker, loopback) on `data_dir`; yields its base URL and pid."""
    before = set(_children())
    with serve(APP, factory=True, env=server_env(data_dir, auth=auth)) as base:
        new = [pid for pid in _children() if pid not in before]
        yield base, new[0] if len(new) == 1 else 0


def _children() -> list[int]:
    """Pids of this process's children (Linux /proc; empty elsewhere)."""
    try:
        text = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads (Linux /proc); NaN when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ms(value: str, unit: str) -> float:
    return float(value) / 1000 if unit == "us" else float(value) * 1000 if unit == "s" else float(value)


def wrk_load(url: str, headers: dict[str, str], seconds: float, connections: int) -> dict[str, float]:
    """Requests, requests/s and mean latency from wrk (one thread: the server gets the other core)."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk got error responses from {url}:\n{out}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    mean = re.search(r"Latency\s+([\d.]+)(us|ms|s)", out)
    count = re.search(r"(\d+) requests in", out)
    if rps is None or mean is None or count is None:
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    return {"requests": float(count.group(1)), "rps": float(rps.group(1)), "mean_ms": _ms(*mean.groups())}


async def _socket_load(url: str, headers: dict[str, str], seconds: float, connections: int) -> dict[str, float]:
    """Closed-loop GETs over keep-alive sockets (the fallback without wrk): requests, requests/s, mean latency."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    path = "/" + url.split("//")[1].split("/", 1)[1]
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            writer.write(request)
            status, body = await _response(reader)
            if status != 200:
                raise RuntimeError(f"{url} answered {status}: {body[:200]!r}")
            latencies.append(time.perf_counter() - t0)
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    wall = time.perf_counter() - start
    return {"requests": len(latencies), "rps": len(latencies) / wall, "mean_ms": statistics.mean(latencies) * 1000}


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status code and body of one HTTP/1.1 response with a content-length."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"content-length: (\d+)", head, re.I)
    body = await reader.readexactly(int(length.group(1)) if length else 0)
    return int(head[9:12]), body


def load(url: str, headers: dict[str, str], seconds: float, connections: int) -> dict[str, float]:
    """wrk when installed, else a Python keep-alive loop (slower, so it understates requests/s)."""
    if shutil.which("wrk"):
        return wrk_load(url, headers, seconds, connections)
    return asyncio.run(_socket_load(url, headers, seconds, connections))


def login_token(base: str, username: str) -> str:
    """An access token through POST /api/v1/auth/login (the OAuth2 password form)."""
    r = httpx.post(base + "/api/v1/auth/login", data={"username": username, "password": PASSWORD}, timeout=30)
    r.raise_for_status()
    return str(r.json()["access_token"])


def end_to_end(root: Path, seed: Seed, seed_dir: Path, rounds: int, seconds: float) -> dict[str, Any]:
    """GET /api/v1/auth/me with auth off against auth on (bearer, API key): same route, two servers, interleaved."""
    path = "/api/v1/auth/me"
    with server(root / "auth-off", auth=False) as (off, off_pid), server(seed_dir, auth=True) as (on, on_pid):
        token = login_token(on, seed.usernames[0])
        cases = {
            "off": (off + path, {}, off_pid),
            "bearer": (on + path, {"Authorization": f"Bearer {token}"}, on_pid),
            "api_key": (on + path, {"X-API-Key": seed.api_key}, on_pid),
        }
        for url, headers, _ in cases.values():  # warm-up: routes, caches, the token's first sight
            load(url, headers, 1, 8)
        runs: dict[str, dict[str, list[float]]] = {k: {"rps": [], "mean_ms": [], "cpu_us": []} for k in cases}
        for _ in range(rounds):  # interleaved so drifting machine load hits every case alike
            for name, (url, headers, pid) in cases.items():
                cpu0 = cpu_seconds(pid)
                result = load(url, headers, seconds, 32)
                runs[name]["cpu_us"].append((cpu_seconds(pid) - cpu0) / result["requests"] * 1e6)
                runs[name]["rps"].append(result["rps"])
                runs[name]["mean_ms"].append(result["mean_ms"])
    out: dict[str, Any] = {"runs": runs, "tool": "wrk" if shutil.which("wrk") else "python sockets"}
    for name in ("bearer", "api_key"):
        # Per round, paired with the auth-off run next to it: wall time per request (1 / throughput) and server
        # CPU time per request, auth on minus auth off.
        wall = [1e6 / a - 1e6 / b for a, b in zip(runs[name]["rps"], runs["off"]["rps"], strict=True)]
        cpu = [a - b for a, b in zip(runs[name]["cpu_us"], runs["off"]["cpu_us"], strict=True)]
        out[name] = {
            "extra_us": statistics.median(wall),
            "extra_cpu_us": statistics.median(cpu),
            "extra_runs": " ".join(f"{d:+.0f}" for d in wall),
        }
    return out


# -- logins against /status ----------------------------------------------------------------------------------


def _poll_status(base: str, token: str, interval_s: float, stop: Any, ready: Any, out: Any) -> None:
    """A separate process: GET /api/v1/status every `interval_s` (open loop, 8 keep-alive connections) until `stop`.

    Latency counts from each request's scheduled send time, so time spent waiting for a free connection during
    a stall is charged too.
    """

    async def main() -> list[tuple[float, float, int]]:
        host, port = base.split("//")[1].split(":")
        request = (
            f"GET /api/v1/status HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
        samples: list[tuple[float, float, int]] = []
        queue: asyncio.Queue[float] = asyncio.Queue()

        async def worker() -> None:
            reader, writer = await asyncio.open_connection(host, int(port))
            while (due := await queue.get()) >= 0:
                sent = time.perf_counter()
                writer.write(request)
                status, _ = await _response(reader)
                done = time.perf_counter()
                samples.append(((done - due) * 1000, (done - sent) * 1000, status))
            writer.close()

        workers = [asyncio.create_task(worker()) for _ in range(8)]
        await asyncio.sleep(0.2)
        ready.set()
        start = time.perf_counter()
        i = 0
        while not stop.is_set():
            due = start + i * interval_s
            i += 1
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait(due)
        for _ in workers:
            queue.put_nowait(-1.0)
        await asyncio.gather(*workers)
        return samples

    out.put(asyncio.run(main()))


@contextlib.contextmanager
def polling(base: str, token: str, interval_s: float) -> Iterator[list[tuple[float, float, int]]]:
    """Run `_poll_status` in a spawned process; yields a list that holds its samples once the block ends."""
    ctx = mp.get_context("spawn")
    stop, ready, queue = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_poll_status, args=(base, token, interval_s, stop, ready, queue))
    proc.start()
    if not ready.wait(60):
        proc.kill()
        raise RuntimeError("the /status poller did not start")
    samples: list[tuple[float, float, int]] = []
    try:
        yield samples
    finally:
        stop.set()
        samples += queue.get(timeout=60)
        proc.join(timeout=30)


async def login_storm(base: str, usernames: list[str], total: int, concurrency: int) -> dict[str, Any]:
    """`total` correct-password logins spread over `usernames`, `concurrency` at a time; statuses and latencies."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        for i in counter:
            form = {"username": usernames[i % len(usernames)], "password": PASSWORD}
            t0 = time.perf_counter()
            r = await client.post("/api/v1/auth/login", data=form)
            latencies.append((time.perf_counter() - t0) * 1000)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=300) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {
        "logins": total,
        "wall_s": wall,
        "per_s": total / wall,
        "statuses": statuses,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
    }


def _summary(samples: list[tuple[float, float, int]]) -> dict[str, float]:
    """Percentiles of /status latency from the scheduled send time and from the actual send."""
    due = [s[0] for s in samples]
    sent = [s[1] for s in samples]
    return {
        "n": len(samples),
        "errors": sum(1 for s in samples if s[2] != 200),
        "p50_ms": percentile(due, 0.5),
        "p99_ms": percentile(due, 0.99),
        "max_ms": max(due),
        "sent_p50_ms": percentile(sent, 0.5),
        "sent_p99_ms": percentile(sent, 0.99),
        "sent_max_ms": max(sent),
    }


def status_under_logins(
    seed: Seed, seed_dir: Path, logins: int, concurrency: int, baseline_s: float, interval_s: float = 0.01
) -> dict[str, Any]:
    """/status latency with no logins (baseline), then during `logins` logins, on one auth-on server."""
    with server(seed_dir, auth=True) as (base, _):
        token = login_token(base, "poller@example.com")
        with polling(base, token, interval_s) as quiet:
            time.sleep(baseline_s)
        with polling(base, token, interval_s) as busy:
            time.sleep(0.2)
            storm = asyncio.run(login_storm(base, seed.usernames, logins, concurrency))
    return {"baseline": _summary(quiet), "storm": _summary(busy), "logins": storm, "concurrency": concurrency}


# -- the section ---------------------------------------------------------------------------------------------


def run(repeats: int = 5, logins: int = 1000, e2e_rounds: int = 8, e2e_seconds: float = 2.0) -> Section:
    """Measure both auth targets and return their rows."""
    root = Path(tempfile.mkdtemp(prefix="ct-bench-auth-"))
    try:
        seed_dir = root / "auth-on"
        seed = asyncio.run(seed_database(seed_dir, n_users=50))
        costs = asyncio.run(check_costs(seed, repeats))
        asgi = asyncio.run(asgi_costs(root, seed, seed_dir, max(repeats, 7)))
        e2e = end_to_end(root, seed, seed_dir, e2e_rounds, e2e_seconds)
        storm = status_under_logins(seed, seed_dir, logins, concurrency=32, baseline_s=5.0)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return build_section(costs, asgi, e2e, storm, repeats)


def build_section(
    costs: dict[str, list[float]],
    asgi: dict[str, list[float]],
    e2e: dict[str, Any],
    storm: dict[str, Any],
    repeats: int,
) -> Section:
    """Rows and notes from the measured figures."""
    section = Section(data={"checks_us": costs, "asgi_us": asgi, "end_to_end": e2e, "status_under_logins": storm})
    target = f"< {TARGET_CHECK_US:.0f} µs"
    for key, label in (("bearer_cached", "bearer token"), ("api_key_cached", "API key")):
        best = min(costs[key])
        section.rows.append(
            Row(f"{label} check, cached (in process)", f"{best:.1f} µs", target=target, passed=best < TARGET_CHECK_US)
        )
    first = min(costs["bearer_first"])
    section.rows.append(
        Row("bearer token, first sight (PyJWT decode + check)", f"{first:.0f} µs", target="- (once per token)")
    )
    section.rows.append(
        Row("API key, first sight (SQLite lookup + check)", f"{min(costs['api_key_first']):.0f} µs", target="-")
    )
    for key, label in (("bearer", "bearer"), ("api_key", "API key")):
        extra = min(asgi[key]) - min(asgi["off"])
        section.rows.append(
            Row(
                f"GET /auth/me into the app in process, auth on ({label}) vs off: extra",
                f"{extra:+.1f} µs",
                peer="auth off",
                peer_value=f"{min(asgi[key]):.0f} vs {min(asgi['off']):.0f} µs per request",
                target=target,
                passed=extra < TARGET_CHECK_US,
            )
        )
    runs = e2e["runs"]
    best_off = max(runs["off"]["rps"])
    for key, label in (("bearer", "bearer"), ("api_key", "API key")):
        best_on = max(runs[key]["rps"])
        wall = 1e6 / best_on - 1e6 / best_off
        cpu = min(runs[key]["cpu_us"]) - min(runs["off"]["cpu_us"])
        on_mean = statistics.median(runs[key]["mean_ms"])
        off_mean = statistics.median(runs["off"]["mean_ms"])
        section.rows.append(
            Row(
                f"GET /auth/me over uvicorn (wrk), auth on ({label}) vs off: extra",
                f"{wall:+.1f} µs ({cpu:+.1f} µs server CPU)",
                peer="auth off",
                peer_value=f"{best_on:,.0f} vs {best_off:,.0f} req/s; mean {on_mean:.2f} vs {off_mean:.2f} ms",
                ratio=f"{best_on / best_off:.3f}x",
                target=target,
                passed=wall < TARGET_CHECK_US,
            )
        )
    base, busy, lg = storm["baseline"], storm["storm"], storm["logins"]
    ok_logins = lg["statuses"].get(200, 0) == lg["logins"]
    section.rows.append(
        Row(
            f"GET /status p99 during {lg['logins']:,} logins",
            f"{busy['p99_ms']:.1f} ms",
            peer="no logins",
            peer_value=f"p99 {base['p99_ms']:.1f} ms",
            ratio=f"p50 {busy['p50_ms']:.1f}, max {busy['max_ms']:.0f} ms",
            target=f"< {TARGET_STATUS_P99_MS:.0f} ms",
            passed=busy["p99_ms"] < TARGET_STATUS_P99_MS and busy["errors"] == 0 and ok_logins,
        )
    )
    section.rows.append(
        Row(
            f"logins/s ({storm['concurrency']} concurrent, Argon2id)",
            f"{lg['per_s']:.1f} /s",
            ratio=f"p50 {lg['p50_ms']:.0f} ms each",
            target="-",
        )
    )
    section.notes += [
        f"checks in process: best of {repeats} repeats (20,000 calls each for cached, 2,000 fresh tokens and "
        f"100 key lookups for first sight); medians: "
        + ", ".join(f"{k} {statistics.median(v):.1f} µs" for k, v in costs.items()),
        "first sight is paid once per access token (it is then remembered until it expires, 30 min by default) and "
        "once per API key, user and login until a revocation anywhere (polled every 0.5 s) or the cache TTL "
        "(auth_cache_ttl_s, 10 s); every other request takes the cached path",
        f"in process: the ASGI app called directly (EdgeMiddleware, routing, dependencies, response), this thread's "
        f"CPU time, best of {len(asgi['off'])} interleaved runs of 3,000 requests; medians: "
        + ", ".join(f"{k} {statistics.median(v):.0f} µs" for k, v in asgi.items()),
        f"over uvicorn: {e2e['tool']} (1 thread, 32 connections) against one uvicorn worker per mode, "
        f"{len(runs['off']['rps'])} interleaved rounds; extra = 1e6 / best req/s (on) - 1e6 / best req/s (off); "
        "server CPU = the server process's CPU time per request, best on - best off; mean latency at 32 connections "
        "is the median of the rounds; medians of the per-round differences (wall): "
        + ", ".join(f"{k} {e2e[k]['extra_us']:+.1f} µs (rounds {e2e[k]['extra_runs']})" for k in ("bearer", "api_key")),
        "/status: polled every 10 ms (open loop, 8 keep-alive connections) from its own process with a bearer "
        f"token, latency from the scheduled send; {busy['n']:,} polls during the logins ({busy['errors']} not 200), "
        f"{base['n']:,} in the 5 s baseline; from the actual send instead: p50 {busy['sent_p50_ms']:.1f}, "
        f"p99 {busy['sent_p99_ms']:.1f}, max {busy['sent_max_ms']:.0f} ms during the logins "
        f"(baseline p99 {base['sent_p99_ms']:.1f} ms)",
        f"logins: {lg['logins']:,} correct-password logins over {lg['wall_s']:.1f} s, {storm['concurrency']} at a "
        f"time spread over 50 users, statuses {lg['statuses']}, login latency p99 {lg['p99_ms']:,.0f} ms",
    ]
    return section


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and 200 logins (noisier)")
    parser.add_argument("--logins", type=int, help="logins in the storm (default 1,000)")
    args = parser.parse_args()
    quick = args.quick
    section = run(
        repeats=3 if quick else 5,
        logins=args.logins or (200 if quick else 1000),
        e2e_rounds=3 if quick else 8,
    )
    print_section("auth", section)
    judged = [r for r in section.rows if r.passed is not None]
    print(f"\n{sum(bool(r.passed) for r in judged)}/{len(judged)} targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
