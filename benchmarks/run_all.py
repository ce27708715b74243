"""Run every benchmark on the same data in one invocation and print one table.

.bench-venv/bin/python benchmarks/run_all.py            # everything (~3 min)
.bench-venv/bin/python benchmarks/run_all.py --quick    # fewer repeats
.bench-venv/bin/python benchmarks/run_all.py --json results.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import bench_cli
import bench_event
import bench_memory
import bench_startup
import bench_vectorized
from benchlib import Row, Section, format_table, machine_info, make_market, python_exe


def _guard(name: str, fn: Callable[[], Section]) -> Section:
    """A benchmark that crashes becomes a FAIL row instead of ending the run."""
    t0 = time.perf_counter()
    try:
        section = fn()
    except Exception as exc:
        traceback.print_exc()
        section = Section(rows=[Row(name, f"error: {type(exc).__name__}: {exc}"[:100], passed=False)])
    print(f"  {name}: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return section


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (noisier)")
    parser.add_argument("--json", type=Path, help="write the raw numbers here")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    t0 = time.perf_counter()
    print(f"machine: {machine_info()}", flush=True)
    print(f"interpreter: {python_exe()}", flush=True)
    market = make_market()
    print(f"data: {len(market):,} bars, {market.source}, {market.nbytes / 1e6:.0f} MB of input arrays", flush=True)

    sections: dict[str, Section] = {}
    sections["vectorized"] = _guard("vectorized", lambda: bench_vectorized.run(market, repeats))
    sections["event"] = _guard(
        "event-driven", lambda: bench_event.run(market, 2 if args.quick else 3, 1 if args.quick else 2)
    )
    sections["memory"] = _guard("memory", lambda: bench_memory.run(market))
    sections["startup"] = _guard("start-up", lambda: bench_startup.run(3 if args.quick else 5))
    sections["cli"] = _guard("CLI", lambda: bench_cli.run(2 if args.quick else 3))
    breakdown = bench_vectorized.breakdown(market, repeats)

    rows = [row for s in sections.values() for row in s.rows]
    print()
    print(format_table(rows))
    for name, section in sections.items():
        if section.notes:
            print(f"\n[{name}]")
            for note in section.notes:
                print(f"  - {note}")
    print("\n[vectorized breakdown: best of each stage, run separately]")
    for line in breakdown:
        print(f"  - {line}")
    judged = [r for r in rows if r.passed is not None]
    print(
        f"\n{sum(bool(r.passed) for r in judged)}/{len(judged)} targets met; "
        f"total benchmark time {time.perf_counter() - t0:.0f} s; machine: {machine_info()}"
    )
    if args.json:
        payload: dict[str, Any] = {
            "machine": machine_info(),
            "rows": [asdict(r) for r in rows],
            "data": {name: s.data for name, s in sections.items()},
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
