"""Sweeps on Dask: a real scheduler and worker processes on 127.0.0.1, a LocalCluster, killed workers, resume."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from distributed import Client
from distributed.client import FutureCancelledError
from typer.testing import CliRunner

from cracktrader.cli import app
from cracktrader.engine.metrics import METRIC_KEYS
from cracktrader.runs.strategy_errors import StrategyRuntimeError
from cracktrader.sweeps import SweepResult, executors, sweep
from cracktrader.sweeps.code import StrategyCode, StrategyCodeError, load_strategy, strategy_code
from cracktrader.sweeps.executors import DaskExecutorError
from cracktrader.sweeps.sweep import SweepExecutorError

pytestmark = pytest.mark.timeout(600)
RANGE: dict[str, Any] = {
    "symbols": "BTC/USDT",
    "timeframe": "1h",
    "start": "2023-01-01",
    "end": "2023-04-01",
    "exchange": "synthetic",
}
ALL = tuple(METRIC_KEYS)
START_SECONDS = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A `dask scheduler` and `dask worker` processes started for a test, all bound to 127.0.0.1."""

    address: str
    scheduler: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]]

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


def start_cluster(n_workers: int, log_dir: Path) -> Cluster:
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "dask"]
    log_dir.mkdir(parents=True, exist_ok=True)

    def spawn(args: list[str], name: str) -> subprocess.Popen[bytes]:
        out = (log_dir / f"{name}.log").open("wb")
        return subprocess.Popen([*dask, *args], stdout=out, stderr=subprocess.STDOUT)

    scheduler = spawn(["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], "scheduler")
    # No nanny: the worker is the process itself, so killing it kills the worker (nothing restarts it).
    workers = [
        spawn(
            [
                "worker",
                address,
                "--host",
                "127.0.0.1",
                "--nthreads",
                "1",
                "--no-dashboard",
                "--no-nanny",
                "--death-timeout",
                str(START_SECONDS),
            ],
            f"worker{i}",
        )
        for i in range(n_workers)
    ]
    cluster = Cluster(address, scheduler, workers)
    try:
        with Client(address, timeout=START_SECONDS) as client:
            client.wait_for_workers(n_workers, timeout=START_SECONDS)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = start_cluster(2, tmp_path_factory.mktemp("dask-logs"))
    yield c
    c.stop()


def assert_same_rows(a: SweepResult, b: SweepResult) -> None:
    """The same rows in the same order, every float the same bits (repr round-trips a float exactly)."""
    assert [r.index for r in a.rows] == [r.index for r in b.rows]
    assert [r.params for r in a.rows] == [r.params for r in b.rows]
    assert [repr(r.metrics) for r in a.rows] == [repr(r.metrics) for r in b.rows]


SWEEPS: list[tuple[str, dict[str, Any]]] = [
    ("SmaCross", {"fast": list(range(2, 22)), "slow": [25, 40, 60], "stop_loss": [None, 0.02]}),
    ("BollingerReversion", {"period": [8, 12, 16], "stdev": [1.0, 2.0, 3.0]}),
    ("SmaCrossEvents", {"fast": [5, 10], "slow": [20, 40]}),
]


@pytest.mark.parametrize(("strategy", "grid"), SWEEPS, ids=[s[0] for s in SWEEPS])
def test_sweep_on_a_real_scheduler_and_two_workers_equals_in_process(
    cluster: Cluster, strategy: str, grid: dict[str, Any]
) -> None:
    local = sweep(strategy, grid, metrics=ALL, commission=0.001, cache=False, **RANGE)
    remote = sweep(strategy, grid, metrics=ALL, commission=0.001, executor=cluster.address, cache=False, **RANGE)
    assert len(remote.rows) == len(local.rows) > 0 and remote.evaluated == len(local.rows)
    assert_same_rows(remote, local)
    with Client(cluster.address, timeout=START_SECONDS) as client:
        for chunk in (1, 3, 7):
            again = sweep(
                strategy, grid, metrics=ALL, commission=0.001, executor=client, chunk_size=chunk, cache=False, **RANGE
            )
            assert_same_rows(again, local)
        top = sweep(strategy, grid, top_k=3, sort="total_return", executor=client, cache=False, **RANGE)
    expected = sweep(strategy, grid, top_k=3, sort="total_return", cache=False, **RANGE)
    assert_same_rows(top, expected)


STRATEGY_FILE = """
from cracktrader.engine import indicators as ta
from cracktrader.engine.strategy import Signals, Strategy, StrategyParams


class BandParams(StrategyParams):
    window: int = 10
    band: float = 0.01


class UserBand(Strategy):
    Params = BandParams

    def signals(self, bars):
        mean = ta.sma(bars.close, self.params.window)
        return Signals(entries=bars.close < mean * (1 - self.params.band), exits=bars.close > mean)
"""


def test_a_user_strategy_travels_with_its_source_and_runs_the_same_on_workers(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "strategies"
    folder.mkdir()
    (folder / "user_band.py").write_text(STRATEGY_FILE)
    monkeypatch.setenv("CRACKTRADER_STRATEGY_DIR", str(folder))
    grid = {"window": [5, 10, 20], "band": [0.0, 0.01, 0.02]}
    local = sweep("UserBand", grid, metrics=ALL, cache=False, **RANGE)
    remote = sweep("UserBand", grid, metrics=ALL, executor=cluster.address, cache=False, **RANGE)
    assert len(remote.rows) == 9
    assert_same_rows(remote, local)


def test_an_error_in_the_strategy_on_a_worker_is_the_same_clear_error(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "strategies"
    folder.mkdir()
    broken = STRATEGY_FILE.replace(
        "        mean = ", "        if self.params.window == 20:\n            raise ValueError('boom')\n        mean = "
    )
    (folder / "user_band.py").write_text(broken)
    monkeypatch.setenv("CRACKTRADER_STRATEGY_DIR", str(folder))
    with pytest.raises(StrategyRuntimeError, match="boom") as remote:
        sweep("UserBand", {"window": [5, 20]}, executor=cluster.address, cache=False, **RANGE)
    assert remote.value.code == "STRATEGY_ERROR"


def test_a_source_that_does_not_match_its_hash_is_refused_on_the_worker() -> None:
    forged = StrategyCode("UserBand", False, "0" * 64, STRATEGY_FILE.encode())
    with pytest.raises(StrategyCodeError, match="does not match its hash"):
        load_strategy(forged)
    from cracktrader.strategies.builtin import SmaCross

    code = strategy_code(SmaCross)
    assert code is not None and code.builtin and code.source is None
    assert load_strategy(code) is SmaCross
    with pytest.raises(StrategyCodeError, match="differs"):
        load_strategy(StrategyCode("SmaCross", True, "1" * 64))


def test_executor_dask_starts_a_local_cluster_with_the_same_rows() -> None:
    grid = {"fast": list(range(2, 12)), "slow": [30, 50]}
    local = sweep("SmaCross", grid, metrics=ALL, cache=False, **RANGE)
    seen: list[tuple[int, int]] = []
    remote = sweep(
        "SmaCross",
        grid,
        metrics=ALL,
        executor="dask",
        workers=2,
        cache=False,
        progress=lambda d, t: seen.append((d, t)),
        **RANGE,
    )
    assert_same_rows(remote, local)
    assert seen[0] == (0, 20) and seen[-1] == (20, 20)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_killed_workers_chunks_are_redone_on_the_other(tmp_path: Path) -> None:
    own = start_cluster(2, tmp_path / "logs")
    try:
        grid = {"fast": [3, 5, 8, 13], "slow": [20, 30, 40]}
        local = sweep("SmaCrossEvents", grid, metrics=ALL, cache=False, **RANGE)
        killed = threading.Event()

        def kill_one(done: int, total: int) -> None:
            if 0 < done < total and not killed.is_set():
                own.workers[1].kill()
                own.workers[1].wait(timeout=30)
                killed.set()

        remote = sweep(
            "SmaCrossEvents",
            grid,
            metrics=ALL,
            executor=own.address,
            chunk_size=1,
            progress=kill_one,
            cache=False,
            **RANGE,
        )
        assert killed.is_set() and not remote.cancelled
        assert remote.evaluated == len(local.rows) == 12
        assert_same_rows(remote, local)
        with Client(own.address, timeout=START_SECONDS) as client:
            assert len(client.scheduler_info()["workers"]) == 1
    finally:
        own.stop()


class _LostOnGather:
    """A finished future whose result left with its worker before the gather: Dask reports it cancelled then."""

    def __init__(self, future: Any) -> None:
        self.future = future

    def done(self) -> bool:
        return bool(self.future.done())

    def cancelled(self) -> bool:
        return False

    def result(self) -> Any:
        raise FutureCancelledError(self.future.key, "lost with its worker")


def test_a_chunk_whose_result_is_lost_at_the_gather_is_redone(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    grid = {"fast": [3, 5, 8], "slow": [20, 30]}
    local = sweep("SmaCrossEvents", grid, metrics=ALL, cache=False, **RANGE)
    submit = Client.submit
    lost: list[str] = []

    def losing_submit(self: Client, *args: Any, **kwargs: Any) -> Any:
        future = submit(self, *args, **kwargs)
        if lost:
            return future
        lost.append(future.key)
        return _LostOnGather(future)

    monkeypatch.setattr(Client, "submit", losing_submit)
    remote = sweep("SmaCrossEvents", grid, metrics=ALL, executor=cluster.address, chunk_size=1, cache=False, **RANGE)
    assert len(lost) == 1 and not remote.cancelled
    assert remote.evaluated == len(local.rows) == 6
    assert_same_rows(remote, local)


GRID = {"fast": list(range(2, 22)), "slow": [25, 40]}


def _cancel_at(half: int) -> tuple[threading.Event, Any]:
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        if done >= half:
            cancel.set()

    return cancel, progress


def test_a_cancelled_sweep_resumes_from_the_cache_computing_only_the_rest() -> None:
    reference = sweep("SmaCross", GRID, metrics=ALL, cache=False, **RANGE)
    cancel, stop_half = _cancel_at(20)
    first = sweep("SmaCross", GRID, metrics=ALL, workers=1, chunk_size=5, cancel=cancel, progress=stop_half, **RANGE)
    assert first.cancelled and first.evaluated == 20 and first.cached == 0
    seen: list[tuple[int, int]] = []
    second = sweep("SmaCross", GRID, metrics=ALL, chunk_size=5, progress=lambda d, t: seen.append((d, t)), **RANGE)
    assert not second.cancelled and second.cached == 20 and second.evaluated == 40
    assert seen[0] == (20, 40) and seen[-1] == (40, 40) and len(seen) == 1 + 20 // 5
    assert_same_rows(second, reference)
    third = sweep("SmaCross", GRID, metrics=ALL, progress=lambda d, t: seen.append((d, t)), **RANGE)
    assert third.cached == 40 and seen[-1] == (40, 40)
    assert_same_rows(third, reference)
    # Other costs are another sweep: nothing is reused.
    other = sweep("SmaCross", GRID, metrics=ALL, commission=0.002, **RANGE)
    assert other.cached == 0


def test_a_sweep_cancelled_on_the_cluster_resumes_in_process_with_identical_rows(cluster: Cluster) -> None:
    reference = sweep("SmaCross", GRID, metrics=ALL, cache=False, **RANGE)
    cancel, stop_half = _cancel_at(10)
    first = sweep(
        "SmaCross",
        GRID,
        metrics=ALL,
        executor=cluster.address,
        chunk_size=5,
        cancel=cancel,
        progress=stop_half,
        **RANGE,
    )
    assert first.cancelled and 10 <= first.evaluated < 40
    assert first.rows == [r for r in reference.rows if r.index in {p.index for p in first.rows}]
    second = sweep("SmaCross", GRID, metrics=ALL, **RANGE)
    assert second.cached == first.evaluated and second.evaluated == 40
    assert_same_rows(second, reference)


def test_cli_sweep_runs_on_a_scheduler_address(cluster: Cluster) -> None:
    args = [
        "sweep",
        "--strategy",
        "SmaCross",
        "--grid",
        "fast=5:15:5",
        "--grid",
        "slow=20:40:10",
        "--symbol",
        "BTC/USDT",
    ]
    args += ["--start", "2023-01-01", "--end", "2023-04-01", "--exchange", "synthetic", "--no-cache"]
    result = CliRunner().invoke(app, [*args, "--executor", cluster.address, "--sort", "total_return", "--top", "3"])
    assert result.exit_code == 0, result.output
    assert "SmaCross: best 3 of 9 by total_return" in result.output
    bad = CliRunner().invoke(app, [*args, "--executor", "ray"])
    assert bad.exit_code == 2 and "not supported" in bad.output


def test_unknown_executor_and_unreachable_scheduler_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SweepExecutorError, match="not supported"):
        sweep("SmaCross", {"fast": [5]}, executor="spark", **RANGE)
    monkeypatch.setattr(executors, "CONNECT_SECONDS", 1.0)
    with pytest.raises(DaskExecutorError, match="cannot reach"):
        sweep("SmaCross", {"fast": [5]}, executor=f"tcp://127.0.0.1:{_free_port()}", cache=False, **RANGE)


def test_chunks_are_sized_so_the_per_task_cost_stays_under_one_percent() -> None:
    sizer = executors._Sizer(total=100_000, workers=2, fixed=None)
    assert sizer.size(100_000) == executors.PROBE  # before any measurement: a small probe per worker
    sizer.record(16, 0.016)  # 1 ms per combination
    size = sizer.size(100_000 - 32)
    # At least MIN_TASK_SECONDS of work per task (Dask's ~2 ms is then under 1 %), at most MAX_TASK_SECONDS.
    assert size * 0.001 >= 0.2 and size * 0.001 <= executors.MAX_TASK_SECONDS
    assert sizer.size(1_000) == 250  # near the end: still at least 0.25 s, not split finer for balance
    slow = executors._Sizer(total=50, workers=2, fixed=None)
    slow.record(1, 3.0)  # one combination takes longer than a task should: one per chunk
    assert slow.size(49) == 1


def test_a_cancel_on_a_local_cluster_keeps_the_completed_chunks() -> None:
    reference = sweep("SmaCrossEvents", {"fast": list(range(2, 14)), "slow": [30]}, metrics=ALL, cache=False, **RANGE)
    cancel, stop = _cancel_at(1)
    part = sweep(
        "SmaCrossEvents",
        {"fast": list(range(2, 14)), "slow": [30]},
        metrics=ALL,
        executor="dask",
        workers=2,
        chunk_size=1,
        cancel=cancel,
        progress=stop,
        cache=False,
        **RANGE,
    )
    assert part.cancelled and 1 <= part.evaluated < 12 and len(part.rows) == part.evaluated
    assert part.rows == [r for r in reference.rows if r.index in {p.index for p in part.rows}]


def on_servers_scheduler(address: str, collection: str, body: dict[str, Any]) -> tuple[dict[str, Any], Any, int]:
    """POST a sweep or walk-forward to a server whose sweeps run on `address` and wait until it ended: its document,
    its result rows (sweeps), and how many task transitions the scheduler logged meanwhile."""
    import time

    import httpx

    from cracktrader.settings import get_settings
    from web_support import LiveServer

    before = _scheduler_transitions(address)
    settings = get_settings().model_copy(update={"dask_scheduler": address})
    with LiveServer(settings) as server, httpx.Client(base_url=server.base_url, timeout=60) as c:
        job_id = c.post(f"/api/v1/{collection}", json=body).json()[
            "sweep_id" if collection == "sweeps" else "walkforward_id"
        ]
        deadline = time.monotonic() + 180
        while (doc := c.get(f"/api/v1/{collection}/{job_id}").json())["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, doc
            time.sleep(0.05)
        rows = c.get(f"/api/v1/sweeps/{job_id}/results").json()["items"] if collection == "sweeps" else None
    return doc, rows, _scheduler_transitions(address) - before


def test_a_sweep_over_http_runs_on_the_servers_dask_scheduler_with_the_in_process_rows(cluster: Cluster) -> None:
    body = {
        "strategy_name": "SmaCross",
        "symbols": ["BTC/USDT"],
        "timeframe": "1h",
        "start_date": "2023-01-01T00:00:00Z",
        "end_date": "2023-03-01T00:00:00Z",
        "exchange": "synthetic",
        "grid": {"fast": [5, 10, 15], "slow": [30, 40]},
        "top_k": 6,
    }
    local = sweep(
        "SmaCross", body["grid"], "BTC/USDT", "1h", "2023-01-01T00:00:00Z", "2023-03-01T00:00:00Z", "synthetic",
        top_k=6, cache=False,
    )  # fmt: skip
    doc, rows, transitions = on_servers_scheduler(cluster.address, "sweeps", body)
    assert doc["status"] == "completed", doc
    assert [(r["params"], r["metrics"]) for r in rows] == [(r.params, r.metrics) for r in local.rows]
    assert transitions > 0  # the scheduler ran its tasks


def _scheduler_transitions(address: str) -> int:
    # A counter, not len(transition_log): the log is a bounded deque, full after a few sweeps.
    with Client(address, timeout=START_SECONDS) as client:
        return int(client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter))


WF_GRID: dict[str, Any] = {"fast": [5, 10], "slow": [20, 40]}


def test_walk_forward_and_cpcv_on_a_real_scheduler_equal_in_process_and_use_its_workers(cluster: Cluster) -> None:
    from cracktrader.sweeps import cpcv, walk_forward

    windows = {"train": "30d", "test": "15d", "metric": "total_return", "commission": 0.001}
    before = _scheduler_transitions(cluster.address)
    remote = walk_forward("SmaCross", WF_GRID, executor=cluster.address, **windows, **RANGE)
    after = _scheduler_transitions(cluster.address)
    local = walk_forward("SmaCross", WF_GRID, **windows, **RANGE)
    assert len(remote.windows) == len(local.windows) >= 3
    assert remote.model_dump_json() == local.model_dump_json()  # every window's choice and metric, bit for bit
    assert after > before  # its sweeps ran on the scheduler's workers
    folds = {"n_folds": 4, "n_test_folds": 2, "purge": 5, "metric": "total_return"}
    remote_cv = cpcv("SmaCross", WF_GRID, executor=cluster.address, **folds, **RANGE)
    assert _scheduler_transitions(cluster.address) > after
    assert remote_cv.model_dump_json() == cpcv("SmaCross", WF_GRID, **folds, **RANGE).model_dump_json()


def test_walk_forward_with_an_unknown_executor_is_a_clear_error_before_loading_anything() -> None:
    from cracktrader.sweeps import walk_forward

    with pytest.raises(SweepExecutorError, match="executor 'ray' is not supported; use None or 'local'"):
        walk_forward("SmaCross", WF_GRID, train=100, test=50, executor="ray", **RANGE)


def test_cli_walkforward_runs_on_a_scheduler_address(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    args = ["walkforward", "-s", "SmaCross", "-g", "fast=5,10", "-g", "slow=20,40", "--symbol", "BTC/USDT"]
    args += ["--start", "2023-01-01", "--end", "2023-04-01", "--exchange", "synthetic", "--train", "30d"]
    args += ["--test", "15d", "--metric", "total_return", "--out", str(out)]
    before = _scheduler_transitions(cluster.address)
    result = CliRunner().invoke(app, [*args, "--executor", cluster.address])
    assert result.exit_code == 0, result.output
    assert _scheduler_transitions(cluster.address) > before
    local = tmp_path / "local.json"
    assert CliRunner().invoke(app, [*args[:-1], str(local)]).exit_code == 0
    assert out.read_text() == local.read_text()


def test_a_walk_forward_over_http_runs_on_the_servers_dask_scheduler_with_the_in_process_report(
    cluster: Cluster,
) -> None:
    from cracktrader.settings import get_settings
    from cracktrader.sweeps.walkforward_job import run_request
    from cracktrader.sweeps.walkforward_request import WalkForwardRequest

    body = {
        "strategy_name": "SmaCross",
        "symbols": ["BTC/USDT"],
        "timeframe": "1h",
        "start_date": "2024-01-01T00:00:00Z",
        "end_date": "2024-02-01T00:00:00Z",
        "exchange": "synthetic",
        "grid": {"fast": [5, 10], "slow": [20, 30]},
        "train": 240,
        "test": 120,
    }
    doc, _, transitions = on_servers_scheduler(cluster.address, "walkforwards", body)
    assert doc["status"] == "completed", doc
    assert transitions > 0  # its window sweeps ran on the scheduler
    # After the server's run: computed first, its chunks would be in the sweep cache and the server's read from it.
    local = run_request(WalkForwardRequest.model_validate(body), get_settings()).model_dump(mode="json")
    assert doc["report"] == local
