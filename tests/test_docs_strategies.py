"""The strategy examples of docs/strategies.md run as printed, on every symbol, and pass `check`."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from cracktrader.engine.backtest import run_backtest
from cracktrader.engine.broker import SimSettings
from cracktrader.engine.check import check_strategy
from cracktrader.engine.market import align
from cracktrader.engine.records import O_STATUS, O_SYMBOL, STATUS_FILLED
from cracktrader.engine.strategy import Strategy
from engine_helpers import random_walk

DOC = Path(__file__).resolve().parents[1] / "docs" / "strategies.md"


def _examples() -> dict[str, type[Strategy]]:
    """Run the doc's Python blocks in order in one namespace; the Strategy subclasses they define."""
    namespace: dict[str, object] = {}
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S):
        exec(compile(block, str(DOC), "exec"), namespace)
    return {
        name: obj
        for name, obj in namespace.items()
        if isinstance(obj, type) and issubclass(obj, Strategy) and obj is not Strategy
    }


EXAMPLES = _examples()


def test_the_doc_defines_a_vectorized_and_an_event_example() -> None:
    assert {cls.style() for cls in EXAMPLES.values()} == {"vectorized", "event"}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_doc_example_trades_each_of_three_symbols_and_passes_check(name: str) -> None:
    cls = EXAMPLES[name]
    data = align(
        {s: random_walk(3000, seed=40 + k, vol=0.01) for k, s in enumerate(("A/USDT", "B/USDT", "C/USDT"))}, 8760.0
    )
    res = run_backtest(cls(), data, SimSettings())
    filled = res.orders[res.orders[:, O_STATUS] == STATUS_FILLED]
    assert all(np.bincount(filled[:, O_SYMBOL].astype(int), minlength=3) > 0)
    report = check_strategy(cls, data, SimSettings())
    assert report.passed, [c.first_difference for c in report.checks]
