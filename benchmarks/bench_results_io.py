"""Results I/O benchmarks: `/status` latency while a 1M-bar run saves and while large pages are read.

One uvicorn worker with a fresh data dir (SQLite). A separate process polls `GET /api/v1/status` on a fixed
schedule (open loop: latency counts from the scheduled send time, so a stalled event loop shows in full) while
this process runs the workload:

1. a 1,051,200-bar backtest (2 years of 1m) runs and saves;
2. small slices and the default page of that run are read, from memory and from the store;
3. 8 concurrent `GET /runs/{id}/results?max_points=200000&limit=50000` (the largest pages the API serves);
4. `GET /runs/{id}/equity.csv` streams the 1M-point curve;
5. server RSS before and after.

.venv/bin/python benchmarks/bench_results_io.py   # about a minute; --py-spy DIR also profiles the server
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_web import YEAR_1H, percentile, serve
from benchlib import machine_info

BIG_RUN = {
    "strategy_name": "SmaCross",
    "symbols": ["BTC/USDT"],
    "timeframe": "1m",
    "exchange": "synthetic",
    "start_date": "2022-01-01T00:00:00Z",
    "end_date": "2024-01-01T00:00:00Z",
}
BIG_BARS = 1_051_200
POLL_RATE = 200  # /status requests per second
POLL_CONNECTIONS = 32  # enough that a stall of a few seconds does not run out of connections
STATUS_P99_TARGET_MS = 25.0
SLICE_TARGET_S = 1.0
LARGE_READS = 8
LARGE_QUERY = "max_points=200000&limit=50000"
SLICE_QUERY = "max_points=1000&limit=100&offset=20000"


# -- the /status poller (its own process, so parsing large bodies here never delays it) ---------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One /status request: scheduled send time (monotonic s), latency (ms), and the phase and status it saw."""

    scheduled: float
    latency_ms: float
    phase: str | None
    status: str

    @property
    def answered(self) -> float:
        return self.scheduled + self.latency_ms / 1000


async def _poll(url: str, rate: int, connections: int, stop: Any, ready: Any) -> list[Sample]:
    host, port = url.split("//")[1].split("/")[0].split(":")
    path = "/" + url.split("//")[1].split("/", 1)[1]
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    samples: list[Sample] = []
    queue: asyncio.Queue[float] = asyncio.Queue()

    async def worker(opened: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        opened.set()
        while True:
            scheduled = await queue.get()
            if scheduled < 0:
                break
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
            body = json.loads(await reader.readexactly(length))
            latency = (time.monotonic() - scheduled) * 1000
            samples.append(Sample(scheduled, latency, body.get("phase"), str(body.get("status"))))
        writer.close()

    opened = [asyncio.Event() for _ in range(connections)]
    workers = [asyncio.create_task(worker(e)) for e in opened]
    for e in opened:
        await e.wait()
    ready.set()
    start = time.monotonic()
    i = 0
    while not stop.is_set():
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(due)  # from the schedule, not from when a connection was free: queueing counts
        i += 1
    for _ in workers:
        queue.put_nowait(-1.0)
    await asyncio.gather(*workers)
    return samples


def _poller_main(url: str, rate: int, connections: int, stop: Any, ready: Any, out: Any) -> None:
    samples = asyncio.run(_poll(url, rate, connections, stop, ready))
    out.put([(s.scheduled, s.latency_ms, s.phase, s.status) for s in samples])


@contextmanager
def status_poller(base: str, rate: int = POLL_RATE) -> Iterator[list[Sample]]:
    """Poll /status at `rate` req/s for the duration of the block; the list fills with samples at its end."""
    ctx = mp.get_context("spawn")
    stop, ready, out = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_poller_main, args=(base + "/api/v1/status", rate, POLL_CONNECTIONS, stop, ready, out))
    proc.start()
    ready.wait(30)
    time.sleep(0.2)
    samples: list[Sample] = []
    try:
        yield samples
    finally:
        stop.set()
        samples.extend(Sample(*s) for s in out.get(timeout=120))
        proc.join(30)


def latency_stats(samples: list[Sample], start: float = 0.0, end: float = float("inf")) -> dict[str, float]:
    """p50, p99 and max of the samples whose request was pending at some time in [start, end]."""
    window = [s.latency_ms for s in samples if s.scheduled <= end and s.answered >= start]
    if not window:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {"n": len(window), "p50": percentile(window, 0.5), "p99": percentile(window, 0.99), "max": max(window)}


# -- server memory -------------------------------------------------------------------------------------------------


def server_pid() -> int:
    """The pid of the server subprocess `serve` started (our only child running uvicorn or `cracktrader serve`)."""
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[1] == me and (b"uvicorn" in cmdline or b"cracktrader\0serve" in cmdline):
            return int(entry.name)
    raise RuntimeError("uvicorn subprocess not found")


def _status_kb(pid: int, key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match.group(1)) if match else 0


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


class PeakRss:
    """Peak RSS of a process over a block: the kernel's VmHWM after resetting it (clear_refs 5)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = 0.0
        self.peak = 0.0

    def __enter__(self) -> PeakRss:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self.before = rss_mb(self.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = _status_kb(self.pid, "VmHWM") / 1024


# -- optional profile of the server (py-spy, not a dependency) --------------------------------------------------


class Profiler:
    """`py-spy record` of the server over named blocks (one raw flame file per block), when given a folder."""

    def __init__(self, pid: int, folder: Path | None) -> None:
        self.pid, self.folder = pid, folder

    @contextmanager
    def block(self, name: str) -> Iterator[None]:
        exe = shutil.which("py-spy")
        if self.folder is None or exe is None:
            yield
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        out = self.folder / f"{name}.txt"
        cmd = [
            exe,
            "record",
            "-p",
            str(self.pid),
            "--threads",
            "--nonblocking",
            "--rate",
            "250",
            "--format",
            "raw",
            "-o",
            str(out),
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # attached
        try:
            yield
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)


# -- the workload --------------------------------------------------------------------------------------------------


def wait_until(http: httpx.Client, done: Callable[[dict[str, Any]], bool], timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = http.get("/api/v1/status").json()
        if done(st):
            return st
        time.sleep(0.05)
    raise TimeoutError("run did not finish")


def finished(st: dict[str, Any]) -> bool:
    return st["status"] in ("completed", "failed", "stopped") and st.get("phase") is None


def timed_get(http: httpx.Client, path: str) -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    response = http.get(path)
    return time.perf_counter() - t0, response


def median_get(http: httpx.Client, path: str, repeats: int = 10) -> tuple[float, int]:
    """Median seconds of `repeats` GETs of `path` (after one untimed GET) and the body size."""
    http.get(path).raise_for_status()
    times = []
    size = 0
    for _ in range(repeats):
        elapsed, response = timed_get(http, path)
        response.raise_for_status()
        times.append(elapsed)
        size = len(response.content)
    return statistics.median(times), size


def measure(base: str, profile_dir: Path | None = None) -> dict[str, Any]:
    pid = server_pid()
    prof = Profiler(pid, profile_dir)
    f: dict[str, Any] = {}
    with httpx.Client(base_url=base, timeout=300) as http, status_poller(base) as samples:
        time.sleep(1.0)
        # 0. The first routed request after start-up (FastAPI builds its routes lazily), then a small run and
        # every read below once, so the figures after this are of a warm server.
        cold_start = time.monotonic()
        cold_elapsed, _ = timed_get(http, "/api/v1/runs")
        cold_end = time.monotonic()
        time.sleep(0.5)
        http.post("/api/v1/run/backtest", json=YEAR_1H).raise_for_status()
        small_id = wait_until(http, finished)["run_id"]
        for path in ("/results?" + SLICE_QUERY, "/results?" + LARGE_QUERY, "/results", "/equity.csv"):
            http.get(f"/api/v1/runs/{small_id}{path}").raise_for_status()
        http.delete("/api/v1/run/reset").raise_for_status()
        f["cold_request_ms"] = cold_elapsed * 1000
        time.sleep(1.0)
        idle_start = time.monotonic()
        time.sleep(2.0)
        idle_end = time.monotonic()
        f["rss_before"] = rss_mb(pid)

        # 1. The 1M-bar run, polled throughout.
        with PeakRss(pid) as run_peak, prof.block("run"):
            run_start = time.monotonic()
            started = http.post("/api/v1/run/backtest", json=BIG_RUN)
            started.raise_for_status()
            run_id = started.json()["run_id"]
            final = wait_until(http, finished)
            run_end = time.monotonic()
        f["run"] = {"status": final["status"], "bars": final["bars_total"], "seconds": run_end - run_start}
        f["run_peak"] = run_peak.peak
        time.sleep(1.0)
        f["rss_after"] = rss_mb(pid)

        # 2. Small slice and default page, from memory (the last run) and from the store.
        slice_path = f"/api/v1/runs/{run_id}/results?{SLICE_QUERY}"
        default_path = f"/api/v1/runs/{run_id}/results"
        f["slice_memory"] = median_get(http, slice_path)
        f["default_memory"] = median_get(http, default_path)
        # Another run replaces the 1M-bar run in memory: from here on it is read from the store.
        http.delete("/api/v1/run/reset").raise_for_status()
        http.post("/api/v1/run/backtest", json=YEAR_1H).raise_for_status()
        wait_until(http, finished)
        f["rss_evicted"] = rss_mb(pid)
        with prof.block("slice_store"):
            f["slice_store"] = median_get(http, slice_path)
        f["default_store"] = median_get(http, default_path)
        check = http.get(slice_path).json()
        f["slice_shape"] = (len(check["equity_curve"]), len(check["trades"]), len(check["orders"]), check["page"])

        # 3. Eight concurrent large pages from the store.
        time.sleep(0.5)
        large_path = f"/api/v1/runs/{run_id}/results?{LARGE_QUERY}"

        def large_get(_: int) -> tuple[int, int]:
            with httpx.Client(base_url=base, timeout=300) as client:
                response = client.get(large_path)
                return response.status_code, len(response.content)

        with PeakRss(pid) as large_peak, prof.block("large"), ThreadPoolExecutor(LARGE_READS) as pool:
            large_start = time.monotonic()
            answers = list(pool.map(large_get, range(LARGE_READS)))
            large_end = time.monotonic()
        f["large"] = {
            "seconds": large_end - large_start,
            "codes": [code for code, _ in answers],
            "mb": [size / 1e6 for _, size in answers],
            "rss_before": large_peak.before,
            "peak": large_peak.peak,
        }

        # 4. The 1M-point equity export.
        time.sleep(0.5)
        with PeakRss(pid) as csv_peak, prof.block("csv"):
            csv_start = time.monotonic()
            lines = 0
            size = 0
            with http.stream("GET", f"/api/v1/runs/{run_id}/equity.csv") as response:
                response.raise_for_status()
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    lines += chunk.count(b"\n")
            csv_end = time.monotonic()
        f["csv"] = {
            "seconds": csv_end - csv_start,
            "rows": lines - 1,
            "mb": size / 1e6,
            "rss_before": csv_peak.before,
            "peak": csv_peak.peak,
        }
        time.sleep(0.5)
    f["rss_end"] = rss_mb(pid)

    # Windows of the poll, by time.
    in_run = [s for s in samples if run_start <= s.scheduled <= run_end]
    saving = [s.answered for s in in_run if s.phase == "saving"]
    saving_start = min(saving, default=run_end)
    saving_end = min((s.answered for s in in_run if s.status == "completed"), default=run_end)
    sim = [s.answered for s in in_run if s.phase == "simulating"]
    f["phases"] = {
        "loading_s": (min(sim) if sim else saving_start) - run_start,
        "simulating_s": saving_start - (min(sim) if sim else saving_start),
        "saving_s": saving_end - saving_start,
    }
    f["status_cold"] = latency_stats(samples, cold_start, cold_end)
    f["status_idle"] = latency_stats(samples, idle_start, idle_end)
    f["status_run"] = latency_stats(samples, run_start, run_end)
    f["status_saving"] = latency_stats(samples, saving_start, saving_end)
    f["status_large"] = latency_stats(samples, large_start, large_end)
    f["status_csv"] = latency_stats(samples, csv_start, csv_end)
    f["polls"] = len(samples)
    f["worst"] = {
        name: [
            (round(s.scheduled - start, 2), round(s.latency_ms, 1), s.phase)
            for s in sorted(samples, key=lambda s: -s.latency_ms)
            if s.scheduled <= end and s.answered >= start
        ][:5]
        for name, start, end in (
            ("run", run_start, run_end),
            ("large", large_start, large_end),
            ("csv", csv_start, csv_end),
        )
    }
    return f


# -- the table ------------------------------------------------------------------------------------------------------


def _lat(stats: dict[str, float]) -> str:
    return f"p50 {stats['p50']:.1f} ms, max {stats['max']:.0f} ms, {stats['n']:.0f} polls"


def rows(f: dict[str, Any]) -> list[tuple[str, str, str, str, bool | None]]:
    """(benchmark, figure, detail, target, passed) rows."""
    run, ph, large, csv = f["run"], f["phases"], f["large"], f["csv"]
    ok_target = STATUS_P99_TARGET_MS
    slice_s, slice_b = f["slice_store"]
    default_s, default_b = f["default_store"]
    n_eq, n_tr, n_or, _ = f["slice_shape"]
    all_ok = all(code == 200 for code in large["codes"])
    return [
        (
            f"`/status` p99 during a {run['bars']:,}-bar run (whole run)",
            f"{f['status_run']['p99']:.1f} ms",
            f"{_lat(f['status_run'])}; run {run['seconds']:.1f} s ({run['status']}): data {ph['loading_s']:.1f} s, "
            f"simulate {ph['simulating_s']:.1f} s, save {ph['saving_s']:.1f} s",
            f"< {ok_target:.0f} ms",
            f["status_run"]["p99"] < ok_target,
        ),
        (
            "`/status` max during the first routed request after start-up",
            f"{f['status_cold']['max']:.0f} ms",
            f"`GET /runs` took {f['cold_request_ms']:.0f} ms (FastAPI builds its routes on first use); warm "
            f"idle p99 {f['status_idle']['p99']:.1f} ms",
            "-",
            None,
        ),
        (
            "`/status` p99 during that run's saving phase",
            f"{f['status_saving']['p99']:.1f} ms",
            _lat(f["status_saving"]) + f" over {ph['saving_s']:.1f} s",
            f"< {ok_target:.0f} ms",
            f["status_saving"]["p99"] < ok_target,
        ),
        (
            f"small slice of the stored run (`{SLICE_QUERY}`)",
            f"{slice_s * 1000:.1f} ms",
            f"median of 10; {n_eq} points, {n_tr} trades, {n_or} orders, {slice_b / 1e3:.0f} kB; "
            f"from memory {f['slice_memory'][0] * 1000:.1f} ms",
            f"< {SLICE_TARGET_S * 1000:.0f} ms",
            slice_s < SLICE_TARGET_S,
        ),
        (
            "default page of the stored run (no parameters)",
            f"{default_s * 1000:.1f} ms",
            f"median of 10, {default_b / 1e6:.2f} MB; from memory {f['default_memory'][0] * 1000:.1f} ms",
            "-",
            None,
        ),
        (
            f"`/status` p99 during {LARGE_READS} concurrent `{LARGE_QUERY}`",
            f"{f['status_large']['p99']:.1f} ms",
            _lat(f["status_large"]),
            f"< {ok_target:.0f} ms",
            f["status_large"]["p99"] < ok_target,
        ),
        (
            f"{LARGE_READS} concurrent large pages of the stored run",
            f"{large['seconds']:.1f} s total",
            f"answers {','.join(str(c) for c in sorted(set(large['codes'])))} x{len(large['codes'])}, "
            f"{statistics.median(large['mb']):.1f} MB each; server peak RSS {large['peak']:.0f} MB "
            f"({large['peak'] - large['rss_before']:+.0f} MB)",
            "all 200",
            all_ok,
        ),
        (
            f"`equity.csv` of the stored run ({csv['rows']:,} rows)",
            f"{csv['seconds']:.1f} s",
            f"{csv['mb']:.0f} MB, {csv['mb'] / csv['seconds']:.0f} MB/s; server RSS "
            f"{csv['peak'] - csv['rss_before']:+.0f} MB at peak; `/status` p99 {f['status_csv']['p99']:.1f} ms",
            "-",
            None,
        ),
        (
            "server RSS after the 1M-bar run vs before",
            f"{f['rss_after']:.0f} MB vs {f['rss_before']:.0f} MB",
            f"{f['rss_after'] - f['rss_before']:+.0f} MB (its results stay in memory as the last run); peak "
            f"{f['run_peak']:.0f} MB during the run; {f['rss_evicted']:.0f} MB after the next run replaced it; "
            f"{f['rss_end']:.0f} MB at the end",
            "-",
            None,
        ),
    ]


def format_rows(table: list[tuple[str, str, str, str, bool | None]]) -> str:
    header = ("benchmark", "figure", "detail", "target", "pass")
    cells = [(b, fig, d, t, "-" if p is None else ("PASS" if p else "FAIL")) for b, fig, d, t, p in table]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]

    def line(values: tuple[str, ...]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    return "\n".join([line(header), "|-" + "-|-".join("-" * w for w in widths) + "-|", *(line(c) for c in cells)])


def report(profile_dir: Path | None = None) -> dict[str, Any]:
    """Run everything against a fresh server and print the table; returns the raw figures."""
    data_dir = tempfile.mkdtemp(prefix="ct-bench-io-")
    try:
        with serve("cracktrader.web.app:create_app", factory=True, env={"CRACKTRADER_DATA_DIR": data_dir}) as base:
            figures = measure(base, profile_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print(format_rows(rows(figures)))
    for name, worst in figures["worst"].items():
        text = ", ".join(f"{lat:.0f} ms at +{at:.2f} s ({phase})" for at, lat, phase in worst)
        print(f"  - slowest /status polls in the {name} window: {text}")
    print(
        f"  - one uvicorn worker (fresh SQLite) and the load generators (a /status poller process at {POLL_RATE} "
        f"req/s open loop, and this process) share {os.cpu_count()} cores; machine: {machine_info()}"
    )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--py-spy", type=Path, metavar="DIR", help="also profile the server with py-spy into DIR")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()
    t0 = time.perf_counter()
    print(f"machine: {machine_info()}", flush=True)
    figures = report(args.py_spy)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
