"""Crash points for crash tests: `hit(name)` kills this process with SIGKILL when CRACKTRADER_FAILPOINT is `name`;
`armed(name)` tells a step to leave its work undone, as a crash before it would have.

For crash tests only (tests/test_live_restart.py): production never sets the variable, and then `hit` is a no-op.
"""

from __future__ import annotations

import os
import signal

# Read once at import: a failpoint is chosen when the process starts, and a hit costs one comparison.
_ARMED = os.environ.get("CRACKTRADER_FAILPOINT") or None


def hit(name: str) -> None:
    """Die here, as SIGKILL does (no cleanup, no last write), if the failpoint `name` is armed; else nothing."""
    if _ARMED is not None and name == _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)


def armed(name: str) -> bool:
    """Whether the failpoint `name` is armed (a crash test wants this step never to happen)."""
    return _ARMED is not None and name == _ARMED
