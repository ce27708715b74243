"""A worker process's log records, sent to its server, which logs them again with their run's id.

A backtest or sweep runs in a worker process: what it logs (a strategy's warning, a run's failure) would reach only
that process's stderr, never the server's log tail (`GET /logs`, the dashboard's log page). Workers install
`ForwardingHandler`, which sends each record over the pool's message queue; the server's pool hands it to `replay`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from cracktrader.runs.sanitize import redact_query, redact_urls

LOG = "log"  # the pool message kind of a forwarded record
PACKAGE = "cracktrader"
# Records forwarded per job: a strategy that logs on every bar must not flood the server (the rest are counted).
MAX_PER_JOB = 500
MAX_MESSAGE_CHARS = 4000
# CRACKTRADER_LOG_LEVEL's names; uvicorn's "trace" is below DEBUG, which is as low as ours go.
LEVELS = {"critical": logging.CRITICAL, "error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO}
LEVELS |= {"debug": logging.DEBUG, "trace": logging.DEBUG}

Send = Callable[[str, str, dict[str, Any]], None]


def level_of(name: str | None) -> int:
    """The logging level of a CRACKTRADER_LOG_LEVEL value (INFO when unset or unknown)."""
    return LEVELS.get((name or "info").lower(), logging.INFO)


def set_package_level(name: str | None) -> None:
    """Let the package's records of this level and above reach the handlers (Python's default passes WARNING up)."""
    logging.getLogger(PACKAGE).setLevel(level_of(name))


class ForwardingHandler(logging.Handler):
    """Sends the package's records (and everyone's warnings) to the server, tagged with the job being run."""

    def __init__(self, send: Send) -> None:
        super().__init__(level=logging.DEBUG)
        self._send = send
        self._guard = threading.Lock()
        self._job = ""
        self._sent = 0
        self._dropped = 0

    def begin(self, job_id: str) -> None:
        """Tag the records from here on with `job_id` (a worker runs one job at a time)."""
        with self._guard:
            self._job, self._sent, self._dropped = job_id, 0, 0

    def end(self) -> None:
        """Report how many of the job's records were over the limit, and stop tagging."""
        with self._guard:
            job, dropped = self._job, self._dropped
            self._job, self._sent, self._dropped = "", 0, 0
        if dropped:
            note = f"{dropped} more log records of this run were not forwarded (limit {MAX_PER_JOB} per run)"
            self._send(LOG, job, _payload(PACKAGE, logging.WARNING, note, None))

    def emit(self, record: logging.LogRecord) -> None:
        """Forward the record, or count it once the job's limit is reached (never raises)."""
        if not (record.name == PACKAGE or record.name.startswith(PACKAGE + ".")) and record.levelno < logging.WARNING:
            return
        with self._guard:
            job = self._job
            if job and self._sent >= MAX_PER_JOB:
                self._dropped += 1
                return
            self._sent += 1
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
            self._send(LOG, job, _payload(record.name, record.levelno, message, record.created))
        except Exception:  # a record whose arguments do not format, or a closed queue: as logging itself would
            return


def _payload(logger: str, levelno: int, message: str, created: float | None) -> dict[str, Any]:
    # Redacted before it leaves the worker: the server prints it to stderr as well as keeping it.
    text = redact_query(redact_urls(message))[:MAX_MESSAGE_CHARS]
    return {"logger": logger, "levelno": levelno, "message": text, "created": created, "pid": os.getpid()}


def install(send: Send) -> ForwardingHandler:
    """In a worker process: forward the root logger's records to the server (the level from the environment)."""
    set_package_level(os.environ.get("CRACKTRADER_LOG_LEVEL"))
    handler = ForwardingHandler(send)
    logging.getLogger().addHandler(handler)
    return handler


def replay(job_id: str, payload: dict[str, Any]) -> None:
    """In the server: log a worker's record again, through the server's handlers, with its run's id."""
    name = str(payload.get("logger") or PACKAGE)
    levelno = int(payload.get("levelno") or logging.INFO)
    logger = logging.getLogger(name)
    if not logger.isEnabledFor(levelno):
        return
    record = logger.makeRecord(
        name, levelno, "(worker)", 0, "%s", (str(payload.get("message", "")),), None, extra={"run_id": job_id or None}
    )
    created = payload.get("created")
    if isinstance(created, float):
        record.created = created
    record.process = int(payload.get("pid") or 0)
    logger.handle(record)
