"""Stored strategies merged with the strategy classes, and resolving a run's `strategy_name` to a class."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

from cracktrader.db.strategy_store import DuplicateNameError, StoredStrategy, StrategyStore, name_key
from cracktrader.errors import UnknownStrategyError
from cracktrader.runs.check import CheckDocument, CheckRequest, check_size, run_check
from cracktrader.runs.config import BacktestConfig
from cracktrader.settings import Settings
from cracktrader.strategies.registry import StrategyRegistry
from cracktrader.web.strategies.errors import (
    DuplicateStrategyNameError,
    StrategyInactiveError,
    StrategyNotFoundError,
    StrategyNotRunnableError,
    UnknownBaseStrategyError,
)
from cracktrader.web.strategies.schemas import MAX_ID, StrategyCreate, StrategyUpdate

_ID = re.compile(r"[0-9]{1,10}")


def parse_stored_id(ref: str) -> int | None:
    """A stored strategy's id when `ref` is one: ASCII digits within the id column (`"²".isdigit()` is true)."""
    if not _ID.fullmatch(ref):
        return None
    value = int(ref)
    return value if 1 <= value <= MAX_ID else None


def _iso(value: Any) -> str:
    return str(value.isoformat().replace("+00:00", "Z"))


def preset_entry(preset: StoredStrategy, registry: StrategyRegistry) -> dict[str, Any]:
    """A stored strategy as a list item; the schema and style come from its base class when it has one."""
    base = registry.strategies.get(preset.base_strategy) if preset.base_strategy else None
    return {
        "id": preset.id,
        "kind": "preset",
        "name": preset.name,
        "description": preset.description,
        "base_strategy": preset.base_strategy,
        "parameters": preset.parameters,
        "parameters_schema": base.param_schema() if base is not None else None,
        "style": base.style() if base is not None else None,
        "origin": "stored",
        "is_active": preset.is_active,
        "read_only": False,
        "created_at": _iso(preset.created_at),
        "updated_at": _iso(preset.updated_at),
    }


async def list_strategies(
    *,
    store: StrategyStore,
    owner_id: int,
    registry: StrategyRegistry,
    skip: int,
    limit: int,
    active_only: bool,
    kind: str | None,
) -> dict[str, Any]:
    """Seed 004's page over the classes, then the caller's presets (oldest first)."""
    items: list[dict[str, Any]] = registry.class_entries() if kind in (None, "class") else []
    if kind in (None, "preset"):
        presets = await store.list(owner_id=owner_id, active_only=active_only)
        items += [preset_entry(p, registry) for p in presets]
    return {
        "items": items[skip : skip + limit],
        "total": len(items),
        "skip": skip,
        "limit": limit,
        "load_errors": [e.to_dict() for e in registry.load_errors],
    }


async def get_strategy(*, store: StrategyStore, owner_id: int, registry: StrategyRegistry, ref: str) -> dict[str, Any]:
    """A preset by id, or a class by name (`GET /strategies/SmaCross`)."""
    stored_id = parse_stored_id(ref)
    if stored_id is not None:
        preset = await store.get(stored_id, owner_id=owner_id)
        if preset is not None:
            return preset_entry(preset, registry)
    elif ref in registry.strategies:
        return registry.class_entry(ref)
    raise StrategyNotFoundError(
        f"No strategy with id or class name {ref!r}{registry.load_hint()}",
        details={"strategy_id": ref, "load_errors": [e.to_dict() for e in registry.load_errors]},
    )


def _check_name_free_of_classes(name: str, registry: StrategyRegistry) -> None:
    clash = next((c for c in registry.strategies if name_key(c) == name_key(name)), None)
    if clash is not None:
        raise DuplicateStrategyNameError(
            f"{name!r} is the name of a strategy class; a stored strategy needs a name of its own",
            details={"name": name, "class": clash},
        )


def _validate_preset(base_strategy: str | None, parameters: dict[str, Any], registry: StrategyRegistry) -> None:
    """The base must be a class, and the parameters must satisfy its schema."""
    if base_strategy is None:
        return
    cls = registry.strategies.get(base_strategy)
    if cls is None:
        available = sorted(registry.strategies)
        raise UnknownBaseStrategyError(
            f"Unknown base_strategy {base_strategy!r}. Available: {', '.join(available)}",
            details={"base_strategy": base_strategy, "available": available},
        )
    cls.validate_params(parameters)


async def create_strategy(
    *, store: StrategyStore, owner_id: int, registry: StrategyRegistry, body: StrategyCreate
) -> dict[str, Any]:
    """Store a preset after checking its name and parameters."""
    _check_name_free_of_classes(body.name, registry)
    _validate_preset(body.base_strategy, body.parameters, registry)
    try:
        preset = await store.create(owner_id=owner_id, **body.model_dump())
    except DuplicateNameError:
        raise DuplicateStrategyNameError(
            f"You already have a strategy named {body.name!r}", details={"name": body.name}
        ) from None
    return preset_entry(preset, registry)


async def update_strategy(
    *, store: StrategyStore, owner_id: int, registry: StrategyRegistry, strategy_id: int, body: StrategyUpdate
) -> dict[str, Any]:
    """Change the fields sent; the resulting base and parameters are validated together."""
    current = await store.get(strategy_id, owner_id=owner_id)
    if current is None:
        raise StrategyNotFoundError(f"No strategy with id {strategy_id}", details={"strategy_id": strategy_id})
    # `base_strategy: null` clears the base; null for the other fields means "leave as is".
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None or k == "base_strategy"}
    if "name" in changes:
        _check_name_free_of_classes(changes["name"], registry)
    _validate_preset(
        changes.get("base_strategy", current.base_strategy),
        changes.get("parameters", current.parameters),
        registry,
    )
    try:
        updated = await store.update(strategy_id, owner_id=owner_id, changes=changes)
    except DuplicateNameError:
        raise DuplicateStrategyNameError(
            f"You already have a strategy named {changes['name']!r}", details={"name": changes["name"]}
        ) from None
    if updated is None:
        raise StrategyNotFoundError(f"No strategy with id {strategy_id}", details={"strategy_id": strategy_id})
    return preset_entry(updated, registry)


async def delete_strategy(*, store: StrategyStore, owner_id: int, strategy_id: int) -> None:
    """Delete one of the caller's presets."""
    if not await store.delete(strategy_id, owner_id=owner_id):
        raise StrategyNotFoundError(f"No strategy with id {strategy_id}", details={"strategy_id": strategy_id})


async def resolve_run_strategy(
    *, store: StrategyStore | None, owner_id: int, registry: StrategyRegistry, name: str, params: dict[str, Any]
) -> tuple[str | None, dict[str, Any]]:
    """(class to run, parameters) for a run's `strategy_name`: a class as is, or a preset with `params` on top."""
    if name in registry.strategies:
        return None, params
    preset = await store.get_by_name(name, owner_id=owner_id) if store is not None else None
    if preset is None:
        stored = [p.name for p in await store.list(owner_id=owner_id)] if store is not None else []
        classes = sorted(registry.strategies)
        raise UnknownStrategyError(
            f"Unknown strategy {name!r}: not a strategy class nor one of your stored strategies. "
            f"Classes: {', '.join(classes)}"
            + (f"; stored: {', '.join(stored)}" if stored else "")
            + registry.load_hint(),
            details={
                "strategy": name,
                "available": classes,
                "stored": stored,
                "load_errors": [e.to_dict() for e in registry.load_errors],
            },
        )
    if not preset.is_active:
        raise StrategyInactiveError(
            f"Stored strategy {preset.name!r} is inactive; activate it with PUT /api/v1/strategies/{preset.id}",
            details={"strategy": preset.name, "id": preset.id},
        )
    if preset.base_strategy is None:
        raise StrategyNotRunnableError(
            f"Stored strategy {preset.name!r} has no base_strategy to run; set one with "
            f"PUT /api/v1/strategies/{preset.id}",
            details={"strategy": preset.name, "id": preset.id},
        )
    return preset.base_strategy, {**preset.parameters, **params}


# Checks are CPU work in a worker thread; two at a time keep the server answering on two cores.
_CHECK_SLOTS = threading.BoundedSemaphore(2)


def _run_check_limited(config: BacktestConfig, settings: Settings) -> CheckDocument:
    with _CHECK_SLOTS:
        return run_check(config, settings=settings)


async def check_strategy(
    *,
    store: StrategyStore,
    owner_id: int,
    registry: StrategyRegistry,
    ref: str,
    body: CheckRequest,
    settings: Settings,
) -> CheckDocument:
    """Check a class or one of the caller's stored strategies (by name or id) on the candles `body` names."""
    name = ref
    stored_id = parse_stored_id(ref)
    if stored_id is not None and ref not in registry.strategies:
        preset = await store.get(stored_id, owner_id=owner_id)
        if preset is None:
            raise StrategyNotFoundError(f"No strategy with id {stored_id}", details={"strategy_id": stored_id})
        name = preset.name
    strategy_class, params = await resolve_run_strategy(
        store=store, owner_id=owner_id, registry=registry, name=name, params=body.strategy_params
    )
    config = body.backtest_config(name).model_copy(update={"strategy_class": strategy_class, "strategy_params": params})
    check_size(config, settings)  # refuse before queueing for a slot
    return await asyncio.to_thread(_run_check_limited, config, settings)
