"""Errors of the stored strategies."""

from __future__ import annotations

from cracktrader.errors import CracktraderError, UnknownStrategyError


class StrategyNotFoundError(CracktraderError):
    """No stored strategy with that id among the caller's (another user's looks the same: absent)."""

    code = "NOT_FOUND"
    status_code = 404


class DuplicateStrategyNameError(CracktraderError):
    """The name is taken by one of the caller's presets or by a strategy class."""

    code = "DUPLICATE_NAME"
    status_code = 409


class UnknownBaseStrategyError(UnknownStrategyError):
    """`base_strategy` names no strategy class (a validation error of the body, hence 422)."""

    status_code = 422


class StrategyInactiveError(CracktraderError):
    """A run asked for a preset that is switched off (`is_active: false`)."""

    code = "STRATEGY_INACTIVE"
    status_code = 409


class StrategyNotRunnableError(CracktraderError):
    """A run asked for a preset stored without a `base_strategy`."""

    code = "STRATEGY_NOT_RUNNABLE"
    status_code = 422
