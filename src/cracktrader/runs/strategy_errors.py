"""An exception raised by a strategy's own code becomes a run error naming the exception, the file and the line."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cracktrader.errors import CracktraderError
from cracktrader.runs.errors import RunStoppedError
from cracktrader.strategies.tracebacks import error_text

# Frames in the package itself are the server's internals: never shown, never taken for the strategy's line.
PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)
# An exception's message may hold a whole array's repr: keep the run's error one readable line.
MAX_ERROR_CHARS = 500


class StrategyRuntimeError(CracktraderError):
    """The strategy's code raised: the user can fix it from the file and line given."""

    code = "STRATEGY_ERROR"
    status_code = 422


def strategy_source(cls: type) -> str | None:
    """The file a strategy class is defined in; None for the package's own (built-in) strategies."""
    try:
        path = inspect.getsourcefile(cls)
    except (TypeError, OSError):
        return None
    if path is None:
        return None
    resolved = os.path.realpath(path)
    if resolved.startswith(PACKAGE_DIR + os.sep):
        return None
    return resolved


def _innermost_frame_in(exc: BaseException, path: str) -> tuple[int, str] | None:
    """(line, function) of the innermost traceback frame of `exc` in the file `path`."""
    found: tuple[int, str] | None = None
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if os.path.realpath(code.co_filename) == path:
            found = (tb.tb_lineno, code.co_name)
        tb = tb.tb_next
    return found


def locate_strategy_error(exc: BaseException, cls: type) -> StrategyRuntimeError | None:
    """`exc` as a StrategyRuntimeError when it arose in `cls`'s source file, else None (an internal error)."""
    if isinstance(exc, CracktraderError | RunStoppedError):
        return None
    path = strategy_source(cls)
    if path is None:
        return None
    frame = _innermost_frame_in(exc, path)
    if frame is None:
        return None
    line, function = frame
    error = error_text(exc)[:MAX_ERROR_CHARS]
    return StrategyRuntimeError(
        f"Strategy {getattr(cls, 'name', cls.__name__)} failed in {function}() at {path} line {line}: {error}",
        details={
            "strategy": getattr(cls, "name", cls.__name__),
            "exception": type(exc).__name__,
            "error": error,
            "file": path,
            "line": line,
            "function": function,
        },
    )


@contextmanager
def strategy_errors(cls: type) -> Iterator[None]:
    """Re-raise an exception from `cls`'s own code as a StrategyRuntimeError; anything else as it is."""
    try:
        yield
    except Exception as exc:
        located = locate_strategy_error(exc, cls)
        if located is None:
            raise
        raise located from exc
