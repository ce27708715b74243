"""Bodies of `/strategies`: seed 004's stored-strategy shape, extended to carry the read-only classes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# A preset's parameters are a flat JSON object; this caps what one can hold (the body cap bounds bytes).
MAX_PARAMETERS = 100
# Ids are PostgreSQL `integer`s: anything above overflows the column, so it is refused before any query.
MAX_ID = 2**31 - 1


def _clean_name(value: str | None) -> str | None:
    if value is None:
        return None
    cleaned = value.strip()
    if not cleaned:
        raise ValueError("name must not be blank")
    return cleaned


def _check_parameters(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and len(value) > MAX_PARAMETERS:
        raise ValueError(f"at most {MAX_PARAMETERS} parameters are accepted")
    return value


class StrategyCreate(BaseModel):
    """A new stored strategy (seed 004's body plus `base_strategy`, the class the preset runs)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=200, examples=["RSI Mean Reversion"])
    description: str = Field("", max_length=2000, examples=["Buy oversold, sell overbought"])
    base_strategy: str | None = Field(
        None,
        max_length=200,
        description="Strategy class the preset runs (see the `kind: class` entries); without one it cannot run",
        examples=["RsiMeanReversion"],
    )
    # The example's names are RsiMeanReversion's (the base_strategy example), so the printed example runs.
    parameters: dict[str, Any] = Field(
        default_factory=dict, examples=[{"period": 14, "oversold": 30, "overbought": 70}]
    )
    is_active: bool = Field(True, strict=True)

    _name = field_validator("name")(lambda cls, value: _clean_name(value))
    _parameters = field_validator("parameters")(lambda cls, value: _check_parameters(value))


class StrategyUpdate(BaseModel):
    """Fields to change; those left out keep their value. `parameters` replaces the whole object."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200, examples=["Updated Strategy Name"])
    description: str | None = Field(None, max_length=2000)
    base_strategy: str | None = Field(None, max_length=200)
    parameters: dict[str, Any] | None = Field(None, examples=[{"period": 10}])
    is_active: bool | None = Field(None, strict=True)

    _name = field_validator("name")(lambda cls, value: _clean_name(value))
    _parameters = field_validator("parameters")(lambda cls, value: _check_parameters(value))


class StrategyOut(BaseModel):
    """A strategy: a read-only class (`id` null) or one of the caller's stored presets."""

    id: int | None = Field(description="The stored strategy's id; null for strategy classes")
    kind: Literal["class", "preset"]
    name: str
    description: str
    base_strategy: str | None = Field(description="The class a preset runs; null for classes")
    parameters: dict[str, Any] = Field(description="A preset's parameters, or a class's defaults")
    parameters_schema: dict[str, Any] | None = Field(
        description="JSON Schema of the parameters (of the base class for presets; null if it has none)"
    )
    style: Literal["vectorized", "event"] | None
    origin: str = Field(description="builtin, a strategy file, an entry point, or `stored`")
    is_active: bool
    read_only: bool
    created_at: str | None
    updated_at: str | None


class LoadErrorOut(BaseModel):
    """A strategy source that failed to load: which file (or entry point), which line, and the error."""

    source: str = Field(description="The strategy file's path, or `entry point NAME`")
    line: int | None = Field(description="The line of the file where loading failed, when known")
    error: str = Field(description="The exception, e.g. `SyntaxError: invalid syntax`")
    message: str = Field(description="All of it in one line: `/strats/my_strat.py line 7: SyntaxError: ...`")


class StrategyList(BaseModel):
    """Seed 004's page, over the classes first and then the caller's presets."""

    items: list[StrategyOut]
    total: int
    skip: int
    limit: int
    load_errors: list[LoadErrorOut]
