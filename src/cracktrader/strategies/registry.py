"""Find strategies: built-ins, a user folder and the `cracktrader.strategies` entry points.

A user strategy that fails to import is reported in `load_errors` and does not hide the others.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from cracktrader.engine.strategy import Strategy
from cracktrader.errors import UnknownStrategyError
from cracktrader.settings import Settings, get_settings
from cracktrader.strategies.builtin import BUILTIN_STRATEGIES
from cracktrader.strategies.tracebacks import SourceLocation, error_text, locate

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "cracktrader.strategies"
# The package of the modules `import_strategy_file` makes: no fresh interpreter can import them by name.
USER_MODULE_PREFIX = "cracktrader_user_strategies."


@dataclass(frozen=True, slots=True)
class LoadError:
    """A strategy source that could not be loaded: which file (or entry point), which line, and the error."""

    source: str
    error: str
    line: int | None = None

    @property
    def message(self) -> str:
        """`/strats/my_strat.py line 7: SyntaxError: invalid syntax`."""
        return SourceLocation(self.source, self.line, self.error).describe()

    def to_dict(self) -> dict[str, Any]:
        """The entry of `load_errors` in the API and `cracktrader strategies --json`."""
        return {"source": self.source, "line": self.line, "error": self.error, "message": self.message}


@dataclass(slots=True)
class StrategyRegistry:
    """Strategies by name, with where each came from and what failed to load."""

    strategies: dict[str, type[Strategy]] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    load_errors: list[LoadError] = field(default_factory=list)

    def add(self, cls: type[Strategy], origin: str) -> None:
        """Register a class; a later source with the same name is reported, not silently shadowed."""
        if cls.name in self.strategies and self.strategies[cls.name] is not cls:
            self.load_errors.append(
                LoadError(origin, f"strategy name {cls.name!r} already defined by {self.origins[cls.name]}")
            )
            return
        self.strategies[cls.name] = cls
        self.origins[cls.name] = origin

    def class_entry(self, name: str) -> dict[str, Any]:
        """One class as a read-only entry of the strategy list (the API and `cracktrader strategies --json`)."""
        return {
            "id": None,
            "kind": "class",
            **self.strategies[name].describe(),
            "base_strategy": None,
            "origin": self.origins[name],
            "is_active": True,
            "read_only": True,
            "created_at": None,
            "updated_at": None,
        }

    def class_entries(self) -> list[dict[str, Any]]:
        """Every class as a read-only list entry."""
        return [self.class_entry(name) for name in self.strategies]

    def get(self, name: str) -> type[Strategy]:
        """The class named `name`; the error lists the available names."""
        try:
            return self.strategies[name]
        except KeyError:
            raise UnknownStrategyError(
                f"Unknown strategy {name!r}. Available: {', '.join(sorted(self.strategies))}{self.load_hint()}",
                details={
                    "strategy": name,
                    "available": sorted(self.strategies),
                    "load_errors": [e.to_dict() for e in self.load_errors],
                },
            ) from None

    def load_hint(self) -> str:
        """For messages about a name that is not found: the sources that failed to load (it may be in one)."""
        if not self.load_errors:
            return ""
        return ". Some strategy sources failed to load: " + "; ".join(e.message for e in self.load_errors)


def load_registry(settings: Settings | None = None) -> StrategyRegistry:
    """Collect built-in, folder and entry-point strategies."""
    settings = settings or get_settings()
    reg = StrategyRegistry()
    for cls in BUILTIN_STRATEGIES:
        reg.add(cls, "builtin")
    if settings.strategy_dir is not None:
        _load_folder(reg, Path(settings.strategy_dir))
    _load_entry_points(reg)
    return reg


def get_strategy(name: str, settings: Settings | None = None) -> type[Strategy]:
    """Look a strategy class up by name."""
    return load_registry(settings).get(name)


def _load_folder(reg: StrategyRegistry, folder: Path) -> None:
    if not folder.is_dir():
        reg.load_errors.append(LoadError(str(folder), "strategy folder does not exist"))
        return
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            module = import_strategy_file(path)
        except Exception as exc:  # a broken user file must not break the others
            where = locate(exc, path)
            log.warning("Could not load strategies from %s", where.describe())
            reg.load_errors.append(LoadError(str(path), where.error, where.line))
            continue
        for cls in strategy_classes(module):
            reg.add(cls, str(path))


def import_strategy_file(path: Path) -> ModuleType:
    """Import a strategy file as its own module (named after its resolved path, so two folders never clash)."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    name = f"{USER_MODULE_PREFIX}{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def strategy_classes(module: ModuleType) -> list[type[Strategy]]:
    return [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Strategy)
        and obj is not Strategy
        and obj.__module__ == module.__name__
        and not inspect.isabstract(obj)
    ]


def _load_entry_points(reg: StrategyRegistry) -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # one broken plugin must not break the others
            log.warning("Could not load strategy entry point %s: %s", ep.name, exc)
            reg.load_errors.append(LoadError(f"entry point {ep.name}", error_text(exc)))
            continue
        if inspect.isclass(obj) and issubclass(obj, Strategy):
            reg.add(obj, f"entry point {ep.name}")
        elif inspect.ismodule(obj):
            for cls in strategy_classes(obj):
                reg.add(cls, f"entry point {ep.name}")
        else:
            reg.load_errors.append(LoadError(f"entry point {ep.name}", "not a Strategy subclass or module"))
