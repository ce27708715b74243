"""Write the dashboard's metric help (static/ui/metrics-help.json) from the tables of docs/metrics.md.

The doc is the one source of each metric's meaning; the dashboard shows these lines next to the numbers, and
tests/test_ui_metrics_help.py fails when the JSON and the doc disagree (run this script to refresh it).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "metrics.md"
OUT = ROOT / "src" / "cracktrader" / "web" / "static" / "ui" / "metrics-help.json"
ROW = re.compile(r"^\|\s*`(?P<key>[a-z_]+)`\s*\|(?P<what>[^|]*)\|(?P<units>[^|]*)\|")


def _plain(text: str) -> str:
    """Markdown cell text as plain text: no backticks or emphasis, spaces collapsed."""
    return " ".join(text.replace("`", "").replace("**", "").split())


def _kind(units: str) -> str:
    """How the dashboard formats a value of these units."""
    if units.startswith("fraction"):
        return "percent"
    if units.startswith("currency"):
        return "money"
    if units.startswith("days"):
        return "days"
    if units.startswith("years"):
        return "years"
    if units.startswith("bars"):
        return "bars"
    if units.startswith("count"):
        return "count"
    return "number"


def metrics_help(doc: str) -> dict[str, dict[str, str]]:
    """Each metric key of the doc's tables: its help line (definition and units) and its format kind."""
    out: dict[str, dict[str, str]] = {}
    for line in doc.splitlines():
        m = ROW.match(line)
        if m is None:
            continue
        what, units = _plain(m["what"]), _plain(m["units"])
        out[m["key"]] = {"help": f"{what} ({units})", "units": units, "kind": _kind(units)}
    return out


def render(doc: str) -> str:
    """The JSON file's text."""
    return json.dumps(metrics_help(doc), indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def main() -> int:
    """Regenerate the file; exit 0."""
    OUT.write_text(render(DOC.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
