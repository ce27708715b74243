"""Auth benchmarks: what checking a token or an API key costs, and /status latency during a storm of logins.

Targets of the issue: a token or API-key check costs < 50 µs per request, and 1,000 logins do not block
`/status` (its p99 stays < 50 ms while they run). Every server is a real uvicorn (one worker) on a loopback port
with a fresh SQLite database in a temporary CRACKTRADER_DATA_DIR; users and keys are made with
`cracktrader.auth.service`. Rate limiting is off (`CRACKTRADER_RATE_LIMIT_PER_MINUTE=0`) so it never answers 429.

.venv/bin/python benchmarks/bench_auth.py            # ~3 min, most of it Argon2 during the 1,000 logins
.venv/bin/python benchmarks/bench_auth.py --quick    # fewer repeats and 200 logins
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing as mp
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
from cracktrader.settings import default_database_url

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
    finally:
        await engine.dispose()
    return Seed(url=url, usernames=names, poll_user_id=poller.id, api_key=key)


# -- checks in process ---------------------------------------------------------------------------------------


async def per_call_us(fn: Callable[[], Awaitable[Any]], n: int, repeats: int) -> list[float]:
    """Microseconds per awaited call, one figure per repeat of `n` calls."""
    out = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        for _ in range(n):
            await fn()
        out.append((time.perf_counter() - t0) / n * 1e6)
    return out


async def check_costs(seed: Seed, repeats: int) -> dict[str, list[float]]:
    """Cached bearer and API-key checks, a token's first sight (PyJWT decode) and a key's (SQLite lookup)."""
    engine = make_engine(seed.url)
    store = AuthStore(engine)
    settings = TokenSettings(secret=SECRET)
    try:
        auth = Authenticator(store=store, tokens=settings)
        token = create_access_token(user_id=seed.poll_user_id, role="trader", settings=settings)
        await auth.from_bearer(token)  # warm: verified token and user in the cache
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
            t0 = time.perf_counter()
            for fresh_token in tokens:
                await fresh.from_bearer(fresh_token)
            out["bearer_first"].append((time.perf_counter() - t0) / len(tokens) * 1e6)
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


# -- end to end over HTTP ------------------------------------------------------------------------------------


def _ms(value: str, unit: str) -> float:
    return float(value) / 1000 if unit == "us" else float(value) * 1000 if unit == "s" else float(value)


def wrk_load(url: str, headers: dict[str, str], seconds: float, connections: int) -> dict[str, float]:
    """Requests/s and mean latency from wrk (one thread: the server gets the other core); non-2xx is an error."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk got error responses from {url}:\n{out}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    mean = re.search(r"Latency\s+([\d.]+)(us|ms|s)", out)
    if rps is None or mean is None:
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    return {"rps": float(rps.group(1)), "mean_ms": _ms(mean.group(1), mean.group(2))}


async def _socket_load(url: str, headers: dict[str, str], seconds: float, connections: int) -> dict[str, float]:
    """Closed-loop GETs over keep-alive sockets (the fallback without wrk): requests/s and mean latency."""
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
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 2"):
                raise RuntimeError(f"error response from {url}: {head[:40]!r}")
            length = re.search(rb"content-length: (\d+)", head, re.I)
            await reader.readexactly(int(length.group(1)) if length else 0)
            latencies.append(time.perf_counter() - t0)
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return {"rps": len(latencies) / (time.perf_counter() - start), "mean_ms": statistics.mean(latencies) * 1000}


def load(url: str, headers: dict[str, str], seconds: float, connections: int) -> dict[str, float]:
    """wrk when installed, else a Python keep-alive loop (which is slower, so it understates requests/s)."""
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
    off_dir = root / "auth-off"
    path = "/api/v1/auth/me"
    with (
        serve(APP, factory=True, env=server_env(off_dir, auth=False)) as off,
        serve(APP, factory=True, env=server_env(seed_dir, auth=True)) as on,
    ):
        token = login_token(on, seed.usernames[0])
        cases = {
            "off": (off + path, {}),
            "bearer": (on + path, {"Authorization": f"Bearer {token}"}),
            "api_key": (on + path, {"X-API-Key": seed.api_key}),
        }
        for url, headers in cases.values():  # warm-up: routes, caches, first-sight token decode
            load(url, headers, 1, 8)
        runs: dict[str, dict[str, list[float]]] = {name: {"rps": [], "mean_ms": [], "c1_mean_ms": []} for name in cases}
        for _ in range(rounds):  # interleaved so drifting machine load hits every case
            for name, (url, headers) in cases.items():
                many = load(url, headers, seconds, 32)
                one = load(url, headers, seconds / 2, 1)
                runs[name]["rps"].append(many["rps"])
                runs[name]["mean_ms"].append(many["mean_ms"])
                runs[name]["c1_mean_ms"].append(one["mean_ms"])
    out: dict[str, Any] = {"runs": runs, "tool": "wrk" if shutil.which("wrk") else "python sockets"}
    for name in ("bearer", "api_key"):
        # Per round: the server's time per request with auth on minus with it off (1/throughput, 32 connections).
        diffs = [1e6 / a - 1e6 / b for a, b in zip(runs[name]["rps"], runs["off"]["rps"], strict=True)]
        c1 = [(a - b) * 1000 for a, b in zip(runs[name]["c1_mean_ms"], runs["off"]["c1_mean_ms"], strict=True)]
        out[name] = {"extra_us": statistics.median(diffs), "extra_us_runs": diffs, "c1_extra_us": statistics.median(c1)}
    return out


# -- logins against /status ----------------------------------------------------------------------------------


def _poll_status(base: str, token: str, interval_s: float, stop: Any, ready: Any, out: Any) -> None:
    """A separate process: GET /api/v1/status every `interval_s` on one keep-alive connection until `stop`.

    Latency counts from each request's scheduled time, so a stall also delays (and is charged to) the requests
    that should have gone out during it.
    """

    async def main() -> list[tuple[float, int]]:
        host, port = base.split("//")[1].split(":")
        request = (
            f"GET /api/v1/status HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
        reader, writer = await asyncio.open_connection(host, int(port))
        samples: list[tuple[float, int]] = []
        ready.set()
        start = time.perf_counter()
        i = 0
        while not stop.is_set():
            due = start + i * interval_s
            i += 1
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"content-length: (\d+)", head, re.I)
            await reader.readexactly(int(length.group(1)) if length else 0)
            samples.append(((time.perf_counter() - due) * 1000, int(head[9:12])))
        writer.close()
        return samples

    out.put(asyncio.run(main()))


@contextlib.contextmanager
def polling(base: str, token: str, interval_s: float) -> Iterator[list[tuple[float, int]]]:
    """Run `_poll_status` in a spawned process; yields a list that holds its samples once the block ends."""
    ctx = mp.get_context("spawn")
    stop, ready, queue = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_poll_status, args=(base, token, interval_s, stop, ready, queue))
    proc.start()
    if not ready.wait(60):
        proc.kill()
        raise RuntimeError("the /status poller did not start")
    samples: list[tuple[float, int]] = []
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


def _summary(samples: list[tuple[float, int]]) -> dict[str, float]:
    lat = [s[0] for s in samples]
    return {
        "n": len(lat),
        "errors": sum(1 for s in samples if s[1] != 200),
        "p50_ms": percentile(lat, 0.5),
        "p99_ms": percentile(lat, 0.99),
        "max_ms": max(lat),
    }


def status_under_logins(
    seed: Seed, seed_dir: Path, logins: int, concurrency: int, baseline_s: float, interval_s: float = 0.01
) -> dict[str, Any]:
    """/status latency with no logins (baseline), then during `logins` logins, on one auth-on server."""
    with serve(APP, factory=True, env=server_env(seed_dir, auth=True)) as base:
        token = login_token(base, "poller@example.com")
        with polling(base, token, interval_s) as quiet:
            time.sleep(baseline_s)
        with polling(base, token, interval_s) as busy:
            time.sleep(0.2)
            storm = asyncio.run(login_storm(base, seed.usernames, logins, concurrency))
    return {"baseline": _summary(quiet), "storm": _summary(busy), "logins": storm, "concurrency": concurrency}


# -- the section ---------------------------------------------------------------------------------------------


def run(repeats: int = 5, logins: int = 1000, e2e_rounds: int = 5, e2e_seconds: float = 4.0) -> Section:
    """Measure both auth targets and return their rows."""
    root = Path(tempfile.mkdtemp(prefix="ct-bench-auth-"))
    try:
        seed_dir = root / "auth-on"
        seed = asyncio.run(seed_database(seed_dir, n_users=50))
        costs = asyncio.run(check_costs(seed, repeats))
        e2e = end_to_end(root, seed, seed_dir, e2e_rounds, e2e_seconds)
        storm = status_under_logins(seed, seed_dir, logins, concurrency=32, baseline_s=5.0)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return build_section(costs, e2e, storm, repeats)


def build_section(costs: dict[str, list[float]], e2e: dict[str, Any], storm: dict[str, Any], repeats: int) -> Section:
    """Rows and notes from the measured figures."""
    section = Section(data={"checks_us": costs, "end_to_end": e2e, "status_under_logins": storm})
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
    runs = e2e["runs"]
    off_rps = statistics.median(runs["off"]["rps"])
    for key, label in (("bearer", "bearer"), ("api_key", "API key")):
        extra = e2e[key]["extra_us"]
        on_rps = statistics.median(runs[key]["rps"])
        section.rows.append(
            Row(
                f"GET /auth/me, auth on ({label}) vs off: extra per request",
                f"{extra:+.1f} µs",
                peer="auth off",
                peer_value=f"{on_rps:,.0f} vs {off_rps:,.0f} req/s",
                ratio=f"{on_rps / off_rps:.3f}x",
                target=target,
                passed=extra < TARGET_CHECK_US,
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
    c1 = ", ".join(f"{k} {e2e[k]['c1_extra_us']:+.1f} µs" for k in ("bearer", "api_key"))
    section.notes += [
        f"checks in process: best of {repeats} repeats (20,000 calls each for cached, 2,000 fresh tokens and "
        f"100 key lookups for first sight); medians: "
        + ", ".join(f"{k} {statistics.median(v):.1f} µs" for k, v in costs.items()),
        "first sight is paid once per access token (it is then remembered until it expires, 30 min by default) and "
        "once per API key per cache TTL (auth_cache_ttl_s, 10 s); every other request takes the cached path",
        f"end to end: {e2e['tool']}, one uvicorn worker each, 32 connections, {len(runs['off']['rps'])} interleaved "
        "rounds; extra = 1e6/req-per-s (auth on) - 1e6/req-per-s (auth off), median of the rounds; mean latency at "
        "32 connections: " + ", ".join(f"{k} {statistics.median(v['mean_ms']):.2f} ms" for k, v in runs.items()),
        f"end to end, one connection (mean latency on - off): {c1}",
        f"/status polled every 10 ms from its own process with a bearer token, latency from the scheduled send: "
        f"{busy['n']:,} polls during the logins ({busy['errors']} not 200), {base['n']:,} in the baseline; "
        f"logins: {lg['logins']:,} over {lg['wall_s']:.1f} s, statuses {lg['statuses']}, 50 users, login p99 "
        f"{lg['p99_ms']:.0f} ms",
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
        e2e_rounds=2 if quick else 5,
        e2e_seconds=2.0 if quick else 4.0,
    )
    print_section("auth", section)
    judged = [r for r in section.rows if r.passed is not None]
    print(f"\n{sum(bool(r.passed) for r in judged)}/{len(judged)} targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
