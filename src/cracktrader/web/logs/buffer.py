"""A bounded in-memory tail of the server's log records, redacted as they are taken."""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from datetime import UTC, datetime
from typing import Any

from cracktrader.runs.sanitize import redact_query, redact_urls

MAX_LINES = 2000
MAX_MESSAGE_CHARS = 4000
# Run ids are uuid4 hex; the runs' log calls pass them as arguments ("Run %s failed", run_id).
_RUN_ID = re.compile(r"[0-9a-f]{32}")


def _redacted(text: str) -> str:
    return redact_query(redact_urls(text))[:MAX_MESSAGE_CHARS]


class LogTail(logging.Handler):
    """Keeps the last `MAX_LINES` records as dicts (time, level, logger, run_id, message), secrets redacted."""

    def __init__(self, capacity: int = MAX_LINES) -> None:
        super().__init__(level=logging.DEBUG)
        self._lines: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        """Store the record (never raises: a log call must not fail because of this tail)."""
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message = f"{message}\n{self.formatException(record.exc_info)}"
            run_id = getattr(record, "run_id", None)
            if run_id is None and isinstance(record.args, tuple):
                run_id = next((a for a in record.args if isinstance(a, str) and _RUN_ID.fullmatch(a)), None)
            line = {
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
                "level": record.levelname,
                "levelno": record.levelno,
                "logger": record.name,
                "run_id": str(run_id)[:64] if run_id is not None else None,
                "message": _redacted(message),
            }
        except Exception:  # a record whose arguments do not format: skip it, as logging itself would report
            return
        with self._guard:
            self._lines.append(line)

    def formatException(self, ei: Any) -> str:
        """The traceback text, as the default formatter writes it."""
        return logging.Formatter().formatException(ei)

    def tail(self, *, level: int, run_id: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` lines at or above `level` (of one run when given), oldest first."""
        with self._guard:
            lines = list(self._lines)
        picked = [line for line in lines if line["levelno"] >= level and (run_id is None or line["run_id"] == run_id)]
        return [{k: v for k, v in line.items() if k != "levelno"} for line in picked[-limit:]]

    def attach(self) -> None:
        """Receive every record that reaches the root logger (stderr output stays as it was)."""
        root = logging.getLogger()
        with _ATTACH_GUARD:
            # Python prints warnings to stderr (`logging.lastResort`) only while no handler exists anywhere: a
            # tail alone would silence them, so it brings that handler along when it is the first.
            if not _ATTACHED and not root.handlers and logging.lastResort is not None:
                root.addHandler(logging.lastResort)
                _LAST_RESORT.append(logging.lastResort)
            _ATTACHED.append(self)
            root.addHandler(self)

    def detach(self) -> None:
        """Stop receiving records."""
        root = logging.getLogger()
        with _ATTACH_GUARD:
            root.removeHandler(self)
            if self in _ATTACHED:
                _ATTACHED.remove(self)
            if not _ATTACHED:
                for handler in _LAST_RESORT:
                    root.removeHandler(handler)
                _LAST_RESORT.clear()


_ATTACH_GUARD = threading.Lock()
_ATTACHED: list[LogTail] = []
_LAST_RESORT: list[logging.Handler] = []
