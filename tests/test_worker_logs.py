"""A worker process's log records reach the server's log tail with their run's id, bounded and redacted."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cracktrader.runs import worker_logs
from cracktrader.settings import get_settings
from cracktrader.web.logs.buffer import LogTail
from web_support import LiveServer

RUN_ID = "ab" * 16
# Logs a warning carrying a credential from inside the backtest, then fails on a chosen bar.
CHATTY = '''
import logging

from pydantic import Field

from cracktrader.engine.context import Context
from cracktrader.engine.strategy import Strategy, StrategyParams

log = logging.getLogger("cracktrader.user.chatty")


class ChattyParams(StrategyParams):
    fail_at: int = Field(5, ge=0, description="The bar whose on_bar raises")


class ChattyStrategy(Strategy):
    """Logs on its first bar, raises on bar `fail_at`."""

    Params = ChattyParams
    seen = 0

    def on_bar(self, ctx: Context) -> None:
        if self.seen == 0:
            log.warning("fetching https://x.test/prices?apiKey=%s&limit=5", "s3cr3t-value")
        if self.seen == self.params.fail_at:
            raise ValueError("the chatty strategy gives up")
        self.seen += 1
'''


class Sink:
    """Collects what a ForwardingHandler sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, kind: str, job_id: str, payload: dict[str, Any]) -> None:
        self.sent.append((kind, job_id, payload))


@pytest.fixture
def forwarding() -> Iterator[tuple[worker_logs.ForwardingHandler, Sink]]:
    sink = Sink()
    handler = worker_logs.ForwardingHandler(sink)
    root = logging.getLogger()
    root.addHandler(handler)
    ours = logging.getLogger("cracktrader.test_forward")
    ours.setLevel(logging.INFO)
    try:
        yield handler, sink
    finally:
        root.removeHandler(handler)
        ours.setLevel(logging.NOTSET)


def test_the_packages_info_and_everyones_warnings_are_forwarded_with_the_job(
    forwarding: tuple[worker_logs.ForwardingHandler, Sink],
) -> None:
    handler, sink = forwarding
    handler.begin(RUN_ID)
    logging.getLogger("cracktrader.test_forward").info("bar %d", 7)
    logging.getLogger("numba.test_forward").warning("third party warning")
    logging.getLogger("numba.test_forward").error("third party error")
    handler.end()
    logging.getLogger("cracktrader.test_forward").warning("between jobs")
    got = [(job, p["logger"], p["levelno"], p["message"]) for _, job, p in sink.sent]
    assert got == [
        (RUN_ID, "cracktrader.test_forward", logging.INFO, "bar 7"),
        (RUN_ID, "numba.test_forward", logging.WARNING, "third party warning"),
        (RUN_ID, "numba.test_forward", logging.ERROR, "third party error"),
        ("", "cracktrader.test_forward", logging.WARNING, "between jobs"),
    ]
    assert {kind for kind, _, _ in sink.sent} == {worker_logs.LOG}


def test_a_job_forwards_at_most_the_limit_then_one_note_with_the_count(
    forwarding: tuple[worker_logs.ForwardingHandler, Sink],
) -> None:
    handler, sink = forwarding
    handler.begin(RUN_ID)
    for i in range(worker_logs.MAX_PER_JOB + 37):
        logging.getLogger("cracktrader.test_forward").info("bar %d", i)
    handler.end()
    messages = [p["message"] for _, _, p in sink.sent]
    assert len(messages) == worker_logs.MAX_PER_JOB + 1
    assert messages[-2] == f"bar {worker_logs.MAX_PER_JOB - 1}"
    assert messages[-1].startswith("37 more log records of this run were not forwarded")
    # The next job starts with a fresh allowance.
    handler.begin("cd" * 16)
    logging.getLogger("cracktrader.test_forward").info("next job")
    assert sink.sent[-1][1:] == ("cd" * 16, sink.sent[-1][2]) and sink.sent[-1][2]["message"] == "next job"


def test_forwarded_messages_are_redacted_in_the_worker(forwarding: tuple[worker_logs.ForwardingHandler, Sink]) -> None:
    handler, sink = forwarding
    handler.begin(RUN_ID)
    logging.getLogger("cracktrader.test_forward").warning("GET https://bob:hunter2@x.test/a?secret=%s", "s3cr3t")
    [(_, _, payload)] = sink.sent
    assert "hunter2" not in payload["message"] and "s3cr3t" not in payload["message"]
    assert payload["message"].startswith("GET https://") and "x.test/a" in payload["message"]


def test_a_replayed_record_reaches_the_tail_with_its_run_and_time() -> None:
    tail = LogTail()
    logger = logging.getLogger("cracktrader.test_replay")
    logger.addHandler(tail)
    logger.setLevel(logging.INFO)
    try:
        payload = {"logger": logger.name, "levelno": logging.WARNING, "message": "50% done", "created": 0.5, "pid": 9}
        worker_logs.replay(RUN_ID, payload)
        worker_logs.replay(RUN_ID, {**payload, "levelno": logging.DEBUG, "message": "below the server's level"})
    finally:
        logger.removeHandler(tail)
        logger.setLevel(logging.NOTSET)
    [line] = tail.tail(level=logging.DEBUG, run_id=RUN_ID, limit=10)
    assert line["message"] == "50% done" and line["level"] == "WARNING"
    assert line["time"] == "1970-01-01T00:00:00.500Z"


@pytest.mark.parametrize(("name", "level"), [("info", logging.INFO), ("TRACE", logging.DEBUG), (None, logging.INFO)])
def test_log_level_names_map_to_levels(name: str | None, level: int) -> None:
    assert worker_logs.level_of(name) == level


def _wait_ended(http: httpx.Client, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 300  # a safety net, not a speed bound
    while time.monotonic() < deadline:
        doc: dict[str, Any] = http.get(f"/api/v1/runs/{run_id}").json()
        if doc["status"] in {"completed", "failed", "stopped"}:
            return doc
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not end")


def test_a_strategys_warning_and_failure_in_a_worker_are_on_the_log_page_with_the_run(tmp_path: Path) -> None:
    folder = tmp_path / "strategies"
    folder.mkdir()
    (folder / "chatty.py").write_text(CHATTY)
    settings = get_settings().model_copy(update={"strategy_dir": folder})
    body = {
        "strategy_name": "ChattyStrategy",
        "strategy_params": {"fail_at": 5},
        "symbols": ["BTC/USDT"],
        "timeframe": "1h",
        "start_date": "2024-01-01",
        "end_date": "2024-01-10",
        "exchange": "synthetic",
    }
    with LiveServer(settings) as server, httpx.Client(base_url=server.base_url, timeout=60) as http:
        started = http.post("/api/v1/run/backtest", json=body)
        assert started.status_code in (200, 201, 202), started.text
        run_id = started.json()["run_id"]
        assert _wait_ended(http, run_id)["status"] == "failed"
        deadline = time.monotonic() + 60
        while True:  # the worker's records travel on the pool's queue: they may land just after the run ends
            items = http.get("/api/v1/logs", params={"run_id": run_id}).json()["items"]
            if len(items) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    by_logger = {(i["logger"], i["level"]): i["message"] for i in items}
    warning = by_logger[("cracktrader.user.chatty", "WARNING")]
    assert warning.startswith("fetching https://x.test/prices?") and "s3cr3t-value" not in warning
    assert any(
        level == "WARNING" and "failed" in message and "the chatty strategy gives up" in message
        for (_, level), message in by_logger.items()
    ), items
    assert any(level == "INFO" and message == f"Run {run_id} started" for (_, level), message in by_logger.items())
