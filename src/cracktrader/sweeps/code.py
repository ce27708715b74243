"""A sweep's strategy as it travels to workers: a built-in by name, any other class by name with its source and hash.

A worker runs a user strategy only from the source it was sent, and only when that source hashes to the digest
sent with it, so a remote worker runs exactly the code the user ran; never a name resolved in its own folders.
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import cracktrader
from cracktrader.engine.strategy import Strategy
from cracktrader.errors import UserInputError
from cracktrader.strategies.builtin import BUILTIN_STRATEGIES
from cracktrader.strategies.pinning import source_file
from cracktrader.strategies.registry import import_strategy_file, strategy_classes

# The code a sweep's rows depend on besides the strategy: a change here must never reuse cached rows.
_ENGINE_PACKAGES = ("engine", "sweeps", "runs")
_ENGINE_FILES = ("strategies/builtin.py",)
_loaded: dict[tuple[str, str], type[Strategy]] = {}
_lock = threading.Lock()


class StrategyCodeError(UserInputError):
    """A strategy that cannot be sent to workers, or a worker whose code differs from the caller's."""

    code = "STRATEGY_CODE_MISMATCH"
    status_code = 422


@dataclass(frozen=True, slots=True)
class StrategyCode:
    """A strategy by name; a non-built-in one with the bytes of its source file and their SHA-256."""

    name: str
    builtin: bool
    sha256: str
    source: bytes | None = None


@functools.cache
def engine_fingerprint() -> str:
    """SHA-256 of cracktrader's version and of the engine, sweep and built-in strategy sources."""
    root = Path(cracktrader.__file__).resolve().parent
    digest = hashlib.sha256(cracktrader.__version__.encode())
    files = [p for pkg in _ENGINE_PACKAGES for p in sorted((root / pkg).rglob("*.py"))]
    for path in [*files, *(root / f for f in _ENGINE_FILES)]:
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def strategy_code(cls: type[Strategy]) -> StrategyCode | None:
    """How `cls` travels: a built-in by name, another class with its source file; None when it has no file."""
    if cls in BUILTIN_STRATEGIES:
        return StrategyCode(cls.name, True, engine_fingerprint())
    path = source_file(cls)
    if path is None or not path.is_file():
        return None
    source = path.read_bytes()
    return StrategyCode(cls.name, False, hashlib.sha256(source).hexdigest(), source)


def load_strategy(code: StrategyCode) -> type[Strategy]:
    """On a worker: the class `code` names, from the source it carries once that source matches its hash."""
    if code.builtin:
        if code.sha256 != engine_fingerprint():
            raise StrategyCodeError(
                f"this worker's cracktrader differs from the caller's (built-in {code.name}); install the same version",
                details={"strategy": code.name},
            )
        for cls in BUILTIN_STRATEGIES:
            if cls.name == code.name:
                return cls
        raise StrategyCodeError(f"no built-in strategy {code.name!r} on this worker", details={"strategy": code.name})
    if code.source is None or hashlib.sha256(code.source).hexdigest() != code.sha256:
        raise StrategyCodeError(
            f"the source sent for strategy {code.name} does not match its hash", details={"strategy": code.name}
        )
    with _lock:
        cached = _loaded.get((code.name, code.sha256))
        if cached is not None:
            return cached
        folder = Path(tempfile.gettempdir()) / "cracktrader-sweep-strategies"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"s_{code.sha256}.py"
        if not target.is_file() or hashlib.sha256(target.read_bytes()).hexdigest() != code.sha256:
            partial = folder / f"{target.name}.{uuid.uuid4().hex}.part"
            partial.write_bytes(code.source)
            partial.replace(target)
        for cls in strategy_classes(import_strategy_file(target)):
            if cls.name == code.name:
                _loaded[(code.name, code.sha256)] = cls
                return cls
    raise StrategyCodeError(f"the source sent defines no strategy {code.name}", details={"strategy": code.name})
