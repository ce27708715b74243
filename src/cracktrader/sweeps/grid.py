"""Parameter grids: names mapped to lists or ranges, the CLI's `fast=5:50:5`, and the strategy schema's verdict."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cracktrader.engine.strategy import Strategy, StrategyParams
from cracktrader.errors import InvalidStrategyParamsError, UserInputError

Grid = Mapping[str, Sequence[Any]]
# A float range `a:b:step` is built as a + i * step, rounded to this many decimals so 0.1 steps stay 0.1, 0.2...
_RANGE_DECIMALS = 12
MAX_RANGE_VALUES = 1_000_000


class InvalidGridError(UserInputError):
    """A grid that cannot be parsed or expanded."""

    code = "INVALID_GRID"
    status_code = 422


@dataclass(frozen=True, slots=True)
class Combination:
    """One point of the grid: its index in grid order and its parameters (fixed ones included)."""

    index: int
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Skipped:
    """A combination the strategy's parameter schema rejects, with the reason it gives."""

    index: int
    params: dict[str, Any]
    reason: str


@dataclass(frozen=True, slots=True)
class Expanded:
    """A grid's combinations in grid order: the valid ones (with validated params) and the skipped ones."""

    valid: list[tuple[Combination, StrategyParams]]
    skipped: list[Skipped]

    @property
    def total(self) -> int:
        return len(self.valid) + len(self.skipped)


def parse_value(raw: str) -> Any:
    """A grid or --param value: JSON when it parses (numbers, booleans, null), else the string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def parse_range(raw: str) -> list[Any]:
    """`5:50:5` -> 5, 10, ..., 50 (the end is inclusive); `a:b` steps by 1; `1,2,5` is a list."""
    text = raw.strip()
    if ":" not in text:
        return [parse_value(v.strip()) for v in text.split(",") if v.strip()]
    parts = [p.strip() for p in text.split(":")]
    if len(parts) not in (2, 3):
        raise InvalidGridError(f"range {raw!r} must be start:end or start:end:step")
    try:
        nums = [json.loads(p) for p in parts]
    except json.JSONDecodeError:
        raise InvalidGridError(f"range {raw!r} must be made of numbers") from None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in nums):
        raise InvalidGridError(f"range {raw!r} must be made of numbers")
    start, end = nums[0], nums[1]
    step = nums[2] if len(nums) == 3 else 1
    if step <= 0 or not math.isfinite(step):
        raise InvalidGridError(f"range {raw!r}: the step must be positive")
    if end < start:
        raise InvalidGridError(f"range {raw!r}: the end is below the start")
    count = math.floor((end - start) / step + 1e-9) + 1
    if count > MAX_RANGE_VALUES:
        raise InvalidGridError(f"range {raw!r} has {count:,} values, more than {MAX_RANGE_VALUES:,}")
    if all(isinstance(v, int) for v in nums):
        return list(range(start, start + count * step, step))
    return [round(start + i * step, _RANGE_DECIMALS) for i in range(count)]


def parse_grid_option(raw: str) -> tuple[str, list[Any]]:
    """`name=5:50:5` or `name=1,2,3` -> (name, values)."""
    name, sep, values = raw.partition("=")
    if not sep or not name.strip():
        raise InvalidGridError(f"--grid expects name=start:end:step or name=v1,v2,..., got {raw!r}")
    parsed = parse_range(values)
    if not parsed:
        raise InvalidGridError(f"--grid {name.strip()} has no values")
    return name.strip(), parsed


def _values(name: str, values: Any) -> list[Any]:
    if isinstance(values, str):
        return parse_range(values)
    if isinstance(values, Iterable) and not isinstance(values, bytes | Mapping):
        out = list(values)
        if not out:
            raise InvalidGridError(f"grid parameter {name!r} has no values")
        return out
    return [values]


def combinations(grid: Mapping[str, Any], fixed: Mapping[str, Any] | None = None) -> Iterator[Combination]:
    """Every combination in grid order: the first name varies slowest, the last fastest."""
    names = list(grid)
    overlap = sorted(set(names) & set(fixed or {}))
    if overlap:
        raise InvalidGridError(f"parameters both fixed and in the grid: {', '.join(overlap)}")
    lists = [_values(name, grid[name]) for name in names]
    for index, values in enumerate(itertools.product(*lists)):
        yield Combination(index, {**(fixed or {}), **dict(zip(names, values, strict=True))})


def grid_size(grid: Mapping[str, Any]) -> int:
    """Number of combinations in the grid."""
    return math.prod(len(_values(name, v)) for name, v in grid.items())


def expand(strategy_cls: type[Strategy], grid: Mapping[str, Any], fixed: Mapping[str, Any] | None = None) -> Expanded:
    """Validate each combination with the strategy's schema; a rejected one is skipped with the schema's reason."""
    known = set(strategy_cls.Params.model_fields)
    unknown = sorted((set(grid) | set(fixed or {})) - known)
    if unknown:
        raise InvalidGridError(
            f"unknown parameter(s) {', '.join(unknown)} for strategy {strategy_cls.name}; "
            f"accepted: {', '.join(sorted(known)) or 'none'}",
            details={"unknown": unknown, "accepted": sorted(known)},
        )
    valid: list[tuple[Combination, StrategyParams]] = []
    skipped: list[Skipped] = []
    for combo in combinations(grid, fixed):
        try:
            valid.append((combo, strategy_cls.validate_params(combo.params)))
        except InvalidStrategyParamsError as exc:
            reason = "; ".join(exc.details.get("errors") or [exc.message])
            skipped.append(Skipped(combo.index, combo.params, reason))
    return Expanded(valid, skipped)
