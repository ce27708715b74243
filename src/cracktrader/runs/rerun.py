"""Reruns: the request that reproduces a stored run, and what differs between the two runs' inputs and results."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cracktrader.errors import UserInputError
from cracktrader.runs.config import BacktestConfig
from cracktrader.runs.errors import RunNotFoundError
from cracktrader.runs.results import RunResults, json_safe
from cracktrader.runs.sanitize import REDACTED, TRUNCATED_KEY

if TYPE_CHECKING:
    from cracktrader.db.run_store import RunStore

__all__ = [
    "FieldChange",
    "RerunComparison",
    "RerunNotPossibleError",
    "RunOutcome",
    "StoredRun",
    "compare_runs",
    "load_stored_run",
    "rerun_config",
]

# Inputs compared key by key, in this order; `data` is compared per symbol and field.
_INPUT_SECTIONS = ("strategy", "effective_params", "costs")
_INPUT_SCALARS = ("cracktrader_version", "start", "end")


class FieldChange(BaseModel):
    """One field that differs between the original run and its rerun (a dotted path into `config.inputs`,
    or a result: `final_value`, `fills`, `orders`, `performance_metrics.NAME`)."""

    model_config = ConfigDict(frozen=True)

    field: str
    before: Any = None
    after: Any = None


class RerunComparison(BaseModel):
    """A rerun's `rerun` field in its results: the original run, and what changed (nothing when identical)."""

    model_config = ConfigDict(frozen=True)

    of: str = Field(description="The original run's id")
    identical: bool = Field(description="Inputs (code, data, version, parameters, costs) and results all equal")
    changes: list[FieldChange] = Field(default_factory=list)


class RerunNotPossibleError(UserInputError):
    """The stored run did not keep enough of its request to run it again."""

    code = "RERUN_NOT_POSSIBLE"
    status_code = 422


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """The results of a run that a comparison looks at."""

    final_value: float | None
    fills: int | None
    orders: int | None
    metrics: dict[str, Any]

    @classmethod
    def of(cls, results: RunResults) -> RunOutcome:
        """From results held in memory."""
        head = results.head
        return cls(
            head.get("final_value"),
            results.n_fills,
            int(results.orders.shape[0]),
            head.get("performance_metrics") or {},
        )


@dataclass(frozen=True, slots=True)
class StoredRun:
    """A stored run as a rerun needs it: its record's config, its results head, and its outcome."""

    run_id: str
    mode: str
    status: str
    config: dict[str, Any]
    head: dict[str, Any] | None
    outcome: RunOutcome | None

    @property
    def inputs(self) -> dict[str, Any]:
        """The recorded `config.inputs` (empty for runs made before inputs were recorded, or without results)."""
        config = (self.head or {}).get("config")
        inputs = config.get("inputs") if isinstance(config, Mapping) else None
        return dict(inputs) if isinstance(inputs, Mapping) else {}


async def load_stored_run(store: RunStore, run_id: str, *, user_id: int | None = None) -> StoredRun:
    """The run from the history; 404 RUN_NOT_FOUND when there is none."""
    summary = await store.get(run_id, user_id=user_id)
    if summary is None:
        raise RunNotFoundError(f"No run with id {run_id!r}", details={"run_id": run_id})
    page = await store.read_page(run_id, user_id=user_id, max_points=2, limit=1)
    outcome = None
    if page is not None:
        outcome = RunOutcome(
            page.head.get("final_value"),
            page.trades_total,
            page.orders_total,
            page.head.get("performance_metrics") or {},
        )
    head = page.head if page is not None else None
    return StoredRun(summary.id, summary.mode, summary.status, dict(summary.config), head, outcome)


def rerun_config(run: StoredRun) -> BacktestConfig:
    """The request that repeats `run`: its strategy, parameters, symbols, exchange, costs and resolved range."""
    if run.mode != "backtest":
        raise RerunNotPossibleError(
            f"Run {run.run_id} is not a backtest; only backtests can be rerun", details={"run_id": run.run_id}
        )
    head_config = (run.head or {}).get("config")
    source = dict(head_config) if isinstance(head_config, Mapping) else dict(run.config)
    if source.get(TRUNCATED_KEY) or "strategy_params_omitted" in source:
        raise RerunNotPossibleError(
            f"Run {run.run_id} kept only part of its request (config_truncated): it cannot be repeated exactly",
            details={"run_id": run.run_id},
        )
    params = source.get("strategy_params")
    if isinstance(params, Mapping) and any(v == REDACTED for v in params.values()):
        raise RerunNotPossibleError(
            f"Run {run.run_id} has parameters that were masked as secrets: it cannot be repeated",
            details={"run_id": run.run_id, "masked": sorted(k for k, v in params.items() if v == REDACTED)},
        )
    fields = {name: source[name] for name in BacktestConfig.model_fields if name in source}
    inputs = run.inputs
    # The range as the original resolved it: "the last 1000 bars" would be another range today.
    if isinstance(inputs.get("start"), str) and isinstance(inputs.get("end"), str):
        fields["start_date"], fields["end_date"] = inputs["start"], inputs["end"]
    try:
        return BacktestConfig.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise RerunNotPossibleError(
            f"Run {run.run_id}'s stored request is no longer valid: {problems}", details={"run_id": run.run_id}
        ) from exc


def _same(a: Any, b: Any) -> bool:
    """Equal values; NaN equals NaN, and True is not 1."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def _diff_maps(prefix: str, before: Any, after: Any, out: list[FieldChange]) -> None:
    b = before if isinstance(before, Mapping) else {}
    a = after if isinstance(after, Mapping) else {}
    for key in [*b, *(k for k in a if k not in b)]:
        if not _same(b.get(key), a.get(key)):
            out.append(FieldChange(field=f"{prefix}.{key}", before=b.get(key), after=a.get(key)))


def compare_runs(original: StoredRun, inputs: Mapping[str, Any], outcome: RunOutcome) -> RerunComparison:
    """Every changed field among code hash, data fingerprints, version, parameters, costs and results."""
    before = original.inputs
    changes: list[FieldChange] = []
    for section in _INPUT_SECTIONS:
        _diff_maps(section, before.get(section), inputs.get(section), changes)
    for name in _INPUT_SCALARS:
        if not _same(before.get(name), inputs.get(name)):
            changes.append(FieldChange(field=name, before=before.get(name), after=inputs.get(name)))
    data_b, data_a = before.get("data") or {}, inputs.get("data") or {}
    for symbol in [*data_b, *(s for s in data_a if s not in data_b)]:
        _diff_maps(f"data.{symbol}", data_b.get(symbol), data_a.get(symbol), changes)
    old = original.outcome or RunOutcome(None, None, None, {})
    new = json_safe({"final_value": outcome.final_value, "metrics": outcome.metrics})
    prior = json_safe({"final_value": old.final_value, "metrics": old.metrics})
    for name, b, a in (
        ("final_value", prior["final_value"], new["final_value"]),
        ("fills", old.fills, outcome.fills),
        ("orders", old.orders, outcome.orders),
    ):
        if not _same(b, a):
            changes.append(FieldChange(field=name, before=b, after=a))
    _diff_maps("performance_metrics", prior["metrics"], new["metrics"], changes)
    return RerunComparison(of=original.run_id, identical=not changes, changes=changes)
