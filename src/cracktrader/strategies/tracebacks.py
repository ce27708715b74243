"""Locate an exception in a user's strategy file: the file, the line, and a one-line description."""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class SourceLocation:
    """Where in a strategy's source an exception arose, and what it was."""

    path: str | None
    line: int | None
    error: str  # "SyntaxError: invalid syntax", "ZeroDivisionError: division by zero"

    def describe(self) -> str:
        """`my_strat.py line 7: SyntaxError: invalid syntax` (the path as given)."""
        if self.path is None:
            return self.error
        where = self.path if self.line is None else f"{self.path} line {self.line}"
        return f"{where}: {self.error}"


def error_text(exc: BaseException) -> str:
    """`Type: message`; a SyntaxError's own message, without the file and line it repeats."""
    if isinstance(exc, SyntaxError):
        return f"{type(exc).__name__}: {exc.msg}"
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def line_in_files(exc: BaseException, files: list[str]) -> tuple[str, int] | None:
    """The innermost traceback frame of `exc` that is in one of `files` (a syntax error's own line first)."""
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
        match = next((f for f in files if _same_file(exc.filename, f)), None)
        if match is not None:
            return match, exc.lineno
    found: tuple[str, int] | None = None
    for frame in traceback.extract_tb(exc.__traceback__):
        match = next((f for f in files if _same_file(frame.filename, f)), None)
        if match is not None and frame.lineno is not None:
            found = (match, frame.lineno)  # keep going: the innermost one is wanted
    return found


def locate(exc: BaseException, path: str | Path) -> SourceLocation:
    """Where `exc` arose in the file `path`, with the exception's one-line description."""
    hit = line_in_files(exc, [str(path)])
    return SourceLocation(str(path), hit[1] if hit else None, error_text(exc))
