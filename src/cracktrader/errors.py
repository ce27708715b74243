"""Typed errors shared by the engine, the data layer, the CLI and the API."""

from __future__ import annotations

from typing import Any, ClassVar


class CracktraderError(Exception):
    """Base error: carries a stable code, an HTTP status and machine-readable details."""

    code: ClassVar[str] = "INTERNAL_ERROR"
    status_code: ClassVar[int] = 500

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def to_dict(self) -> dict[str, Any]:
        """The `error` object of the API's standard envelope."""
        return {"code": self.code, "message": self.message, "details": self.details}


class UserInputError(CracktraderError):
    """Input that the user can correct."""

    code = "VALIDATION_ERROR"
    status_code = 422


class UnknownExchangeError(UserInputError):
    code = "UNKNOWN_EXCHANGE"
    status_code = 400


class InvalidSymbolError(UserInputError):
    code = "INVALID_SYMBOL"
    status_code = 400


class InvalidTimeframeError(UserInputError):
    code = "INVALID_TIMEFRAME"
    status_code = 400


class InvalidDateRangeError(UserInputError):
    code = "INVALID_DATE_RANGE"
    status_code = 400


class DataUnavailableError(CracktraderError):
    """No candles exist for the requested range."""

    code = "DATA_UNAVAILABLE"
    status_code = 404


class ExchangeUnreachableError(DataUnavailableError):
    """The exchange could not be reached after retries."""

    code = "DATA_UNAVAILABLE"
    status_code = 503


class UnknownStrategyError(UserInputError):
    code = "UNKNOWN_STRATEGY"
    status_code = 400


class InvalidStrategyParamsError(UserInputError):
    code = "INVALID_STRATEGY_PARAMS"
    status_code = 422


class StrategyLoadError(CracktraderError):
    """A user strategy module failed to import."""

    code = "STRATEGY_LOAD_ERROR"
    status_code = 500


class InvalidDataError(UserInputError):
    """Malformed candle input, such as a CSV with missing columns."""

    code = "INVALID_DATA"
    status_code = 400
