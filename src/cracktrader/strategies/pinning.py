"""A session's strategy code, pinned: a copy of its source file kept by hash, loaded again when the session resumes.

Editing a strategy file does not change a running session; a session resumed after a restart runs the code it
started with, not the file as it is now.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import sys
import uuid
from pathlib import Path

from cracktrader.engine.strategy import Strategy
from cracktrader.errors import CracktraderError
from cracktrader.settings import Settings
from cracktrader.strategies.registry import import_strategy_file, strategy_classes

log = logging.getLogger(__name__)
PINNED_DIR = "pinned_strategies"


class PinnedStrategyMissingError(CracktraderError):
    """The source a session started with is no longer available."""

    code = "STRATEGY_CHANGED"
    status_code = 409


def source_file(cls: type[Strategy]) -> Path | None:
    """The file that defines the class's module, if it has one."""
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    if path is None:
        try:
            path = inspect.getsourcefile(cls)
        except TypeError:
            return None
    return None if path is None else Path(path)


def pin(cls: type[Strategy], settings: Settings) -> str | None:
    """Keep a copy of the class's source file under its SHA-256 (in the data dir); returns the hash."""
    path = source_file(cls)
    if path is None:
        return None
    try:
        source = path.read_bytes()
    except OSError:
        return None
    digest = hashlib.sha256(source).hexdigest()
    target = Path(settings.data_dir) / PINNED_DIR / f"{digest}.py"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # A partial file of its own: two sessions pinning the same new source at once must not rename each other's.
        partial = target.with_name(f"{target.name}.{uuid.uuid4().hex}.part")
        partial.write_bytes(source)
        partial.replace(target)  # whole or absent: a crash mid-write leaves no half file under the hash
    return digest


def pinned_class(name: str, digest: str, current: type[Strategy], settings: Settings) -> type[Strategy]:
    """The class `name` as it was when its source hashed to `digest`: `current` if unchanged, else the kept copy."""
    path = source_file(current)
    if path is not None and path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest:
        return current
    kept = Path(settings.data_dir) / PINNED_DIR / f"{digest}.py"
    if not kept.is_file():
        raise PinnedStrategyMissingError(
            f"Strategy {name} changed since the session started and its original source ({digest[:12]}) is not kept "
            f"in {kept.parent}; start a new session to trade the new code",
            details={"strategy": name, "source_sha256": digest},
        )
    for cls in strategy_classes(import_strategy_file(kept)):
        if cls.name == name:
            log.info("Resuming with strategy %s as pinned (%s), not as its file is now", name, digest[:12])
            return cls
    raise PinnedStrategyMissingError(
        f"The kept source {kept.name} defines no strategy {name}", details={"strategy": name, "source_sha256": digest}
    )
