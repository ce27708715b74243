"""Out-of-sample index arithmetic: walk-forward windows and combinatorial purged cross-validation splits.

Both work on bar positions [0, n) of a run's time axis; the index sets equal skfolio's `WalkForward` (step equal
to the test length) and `CombinatorialPurgedCV` for the same arguments.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

import numpy as np

from cracktrader.data.timeframes import Timeframe
from cracktrader.errors import UserInputError

# Each window or split sweeps the whole grid: beyond these counts a run is a mistake, not an analysis.
MAX_WINDOWS = 1_000
MAX_SPLITS = 500
_DURATION = re.compile(r"([1-9][0-9]{0,8})([smhdw])")


class InvalidWindowsError(UserInputError):
    """Window or fold arguments that cannot split the run's bars."""

    code = "INVALID_WINDOWS"
    status_code = 422


@dataclass(frozen=True, slots=True)
class Span:
    """Bars [start, stop) of the time axis."""

    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True, slots=True)
class Window:
    """One walk-forward step: the grid is swept on `train`, its best combination is backtested on `test`."""

    train: Span
    test: Span


@dataclass(frozen=True, slots=True)
class CpcvSplit:
    """One CPCV combination: the train bars as contiguous blocks, the test folds (ids and bars) in fold order."""

    train: tuple[Span, ...]
    test_folds: tuple[int, ...]
    tests: tuple[Span, ...]


@dataclass(frozen=True, slots=True)
class CpcvPlan:
    """Every split, the folds' bars, and for each path the split whose test of each fold it takes."""

    folds: tuple[Span, ...]
    splits: tuple[CpcvSplit, ...]
    paths: tuple[tuple[int, ...], ...]  # paths[p][f]: the split whose test of fold f path p takes


def parse_length(value: int | str, timeframe: Timeframe, name: str) -> int:
    """A window length in bars: an int (or digits), or a duration such as "90d" in nominal bars of the timeframe."""
    if isinstance(value, bool):
        raise InvalidWindowsError(f"{name} must be a number of bars or a duration such as 90d, got {value!r}")
    if isinstance(value, int):
        bars = value
    else:
        text = str(value).strip()
        match = _DURATION.fullmatch(text)
        if text.isdigit():
            bars = int(text)
        elif match is None:
            raise InvalidWindowsError(
                f"{name} must be a number of bars or a duration such as 90d (units s, m, h, d, w), got {text[:40]!r}"
            )
        else:
            ms = Timeframe(text).ms
            if ms % timeframe.ms:
                raise InvalidWindowsError(
                    f"{name}={text} is not a whole number of {timeframe.name} bars",
                    details={name: text, "timeframe": timeframe.name},
                )
            bars = ms // timeframe.ms
    if bars < 1:
        raise InvalidWindowsError(f"{name} must be at least 1 bar, got {bars}", details={name: bars})
    return bars


def walk_forward_windows(
    n: int,
    train: int,
    test: int,
    step: int | None = None,
    *,
    anchored: bool = False,
    purge: int = 0,
    partial_last: bool = False,
) -> list[Window]:
    """Windows over n bars: train [s - purge - train, s - purge) (from 0 when anchored), test [s, s + test).

    The first test starts at train + purge and each next one `step` bars later (default: the test length). A last
    test cut short by the end of the data is kept only with `partial_last` (skfolio's `reduce_test`).
    """
    step = test if step is None else step
    for name, value in (("train", train), ("test", test), ("step", step)):
        if value < 1:
            raise InvalidWindowsError(f"{name} must be at least 1 bar, got {value}")
    if purge < 0:
        raise InvalidWindowsError(f"purge must not be negative, got {purge}")
    if step < test:
        raise InvalidWindowsError(
            f"step ({step} bars) must be at least the test length ({test} bars): overlapping test windows would "
            "count bars twice in the stitched equity",
            details={"step": step, "test": test},
        )
    windows: list[Window] = []
    start = train + purge
    while start < n:
        stop = start + test
        if stop > n and not partial_last:
            break
        train_stop = start - purge
        windows.append(Window(Span(0 if anchored else train_stop - train, train_stop), Span(start, min(stop, n))))
        if len(windows) > MAX_WINDOWS:
            raise InvalidWindowsError(
                f"more than {MAX_WINDOWS} windows: lengthen the step or the test window", details={"bars": n}
            )
        start += step
    if not windows:
        raise InvalidWindowsError(
            f"the run has {n} bars, too few for one window of train {train} + purge {purge} + test {test} bars"
            + ("" if partial_last else " (partial_last keeps a shorter last test)"),
            details={"bars": n, "train": train, "test": test, "purge": purge},
        )
    return windows


def _runs(mask: np.ndarray) -> tuple[Span, ...]:
    """The maximal runs of True as spans."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return tuple(Span(int(a), int(b)) for a, b in zip(starts, stops, strict=True))


def cpcv_plan(n: int, n_folds: int, n_test_folds: int, *, purge: int = 0, embargo: int = 0) -> CpcvPlan:
    """Combinatorial purged CV over n bars (López de Prado; skfolio's `CombinatorialPurgedCV`).

    Folds are consecutive, n // n_folds bars each, the last taking the remainder. Each combination of
    `n_test_folds` folds (in lexicographic order) is a split; the train set is every other bar less `purge` bars
    before each test block and `purge + embargo` bars after it.
    """
    if n_folds < 3:
        raise InvalidWindowsError(f"n_folds must be at least 3, got {n_folds}")
    if not 1 <= n_test_folds < n_folds:
        raise InvalidWindowsError(f"n_test_folds must be between 1 and n_folds - 1 ({n_folds - 1}), got {n_test_folds}")
    if purge < 0 or embargo < 0:
        raise InvalidWindowsError(f"purge and embargo must not be negative, got {purge} and {embargo}")
    n_splits = math.comb(n_folds, n_test_folds)
    if n_splits > MAX_SPLITS:
        raise InvalidWindowsError(
            f"{n_folds} folds with {n_test_folds} test folds make {n_splits:,} splits, more than {MAX_SPLITS}",
            details={"splits": n_splits, "max_splits": MAX_SPLITS},
        )
    size = n // n_folds
    if purge + embargo >= size - 1:
        raise InvalidWindowsError(
            f"purge + embargo ({purge + embargo}) must be smaller than a fold's bars minus one ({n} bars / "
            f"{n_folds} folds = {size} a fold)",
            details={"bars": n, "fold_bars": size, "purge": purge, "embargo": embargo},
        )
    folds = tuple(Span(f * size, n if f == n_folds - 1 else (f + 1) * size) for f in range(n_folds))
    splits = []
    for combo in itertools.combinations(range(n_folds), n_test_folds):
        test = np.zeros(n, dtype=np.bool_)
        for f in combo:
            test[folds[f].start : folds[f].stop] = True
        train = ~test
        for block in _runs(test):
            # Purged before a test block; purged and embargoed after it (labels overlap, serial correlation).
            train[max(0, block.start - purge) : block.start] = False
            train[block.stop : block.stop + purge + embargo] = False
        splits.append(CpcvSplit(_runs(train), combo, tuple(folds[f] for f in combo)))
    n_paths = math.comb(n_folds - 1, n_test_folds - 1)
    # Path p takes, for each fold, the p-th split (in split order) that tests that fold.
    testing = [[i for i, s in enumerate(splits) if f in s.test_folds] for f in range(n_folds)]
    paths = tuple(tuple(testing[f][p] for f in range(n_folds)) for p in range(n_paths))
    return CpcvPlan(folds, tuple(splits), paths)
