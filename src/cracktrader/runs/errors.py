"""Errors of the run lifecycle."""

from __future__ import annotations

from cracktrader.errors import CracktraderError


class RunAlreadyActiveError(CracktraderError):
    code = "RUN_ALREADY_ACTIVE"
    status_code = 409


class NoActiveRunError(CracktraderError):
    code = "NO_ACTIVE_RUN"
    status_code = 409


class RunNotResettableError(CracktraderError):
    code = "RUN_NOT_RESETTABLE"
    status_code = 409


class QueueFullError(CracktraderError):
    """As many backtests run and wait as the server admits."""

    code = "QUEUE_FULL"
    status_code = 409


class RunNotFoundError(CracktraderError):
    code = "NOT_FOUND"
    status_code = 404


class NotImplementedYetError(CracktraderError):
    code = "NOT_IMPLEMENTED"
    status_code = 501


class RunStoppedError(Exception):
    """Raised inside a run's worker thread to abandon work once a stop was requested."""
