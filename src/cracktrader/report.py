"""`cracktrader report`: one self-contained HTML file with a run's results page, to keep or share offline.

The file is the dashboard's own results page (static/ui/pages/results.js and what it imports), with
`report/data.js` in place of `api.js`: it answers the page's calls from JSON embedded in the file. The ES
modules are inlined as `data:` URLs under an import map (relative imports rewritten to the map's names), so the
page loads from `file://` in Chromium and Firefox with no network; a CSP meta tag forbids any fetch.
"""

from __future__ import annotations

import base64
import html
import json
import posixpath
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cracktrader import __version__

if TYPE_CHECKING:
    from cracktrader.client import CrackTraderAPI

__all__ = ["MAX_CANDLES", "MAX_ROWS", "collect", "render_html", "report_modules"]

UI_DIR = Path(__file__).resolve().parent / "web" / "static" / "ui"
ENTRY = "report/main.js"
# The report's data source stands in for the API layer (and with it the SDK, which it imports).
SUBSTITUTES = {"api.js": "report/data.js"}
# What the results page asks for: the whole run as this many candles (pages/results.js, MAX_CANDLES).
MAX_CANDLES = 2000
# Round trips, fills and orders embedded at most (each list): bounds the file for a run with very many trades.
MAX_ROWS = 10_000
ROUND_TRIP_PAGE = 1000  # the API's page limit for round trips
LICENCES = [
    ("TradingView Lightweight Charts™ 5.2.1 (Apache-2.0): NOTICE", "vendor/lightweight-charts/NOTICE"),
    ("TradingView Lightweight Charts™ 5.2.1: LICENSE", "vendor/lightweight-charts/LICENSE"),
    ("uPlot 1.6.32 (MIT): LICENSE", "vendor/uplot/LICENSE"),
]
STYLES = ["vendor/uplot/uPlot.min.css", "app.css"]
# The inlined modules may run; nothing may be fetched, framed or posted (the libraries only draw on canvases).
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' data:; style-src 'unsafe-inline'; img-src data: blob:; "
    "font-src data:; connect-src 'none'; form-action 'none'; base-uri 'none'"
)
# `from "./x.js"`, `import "./x.js"` and `import("./x.js")`: the relative specifiers of our own modules.
_IMPORT = re.compile(r"""(\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(["'])(\.{1,2}/[^"']+)\2""")
_NAME = "cracktrader-ui/"


def _resolve(importer: str, specifier: str) -> str:
    """The UI-relative path a module's relative import names, after the report's substitutions."""
    path = posixpath.normpath(posixpath.join(posixpath.dirname(importer), specifier))
    return SUBSTITUTES.get(path, path)


def report_modules(entry: str = ENTRY) -> dict[str, str]:
    """The ES modules the report page runs, by UI-relative path, imports rewritten to import-map names.

    Vendored libraries are kept byte for byte (they import nothing).
    """
    modules: dict[str, str] = {}
    pending = [entry]
    while pending:
        path = pending.pop()
        if path in modules:
            continue
        source = (UI_DIR / path).read_text(encoding="utf-8")
        if not path.startswith("vendor/"):

            def rewrite(m: re.Match[str], importer: str = path) -> str:
                target = _resolve(importer, m.group(3))
                pending.append(target)
                return f"{m.group(1)}{m.group(2)}{_NAME}{target}{m.group(2)}"

            source = _IMPORT.sub(rewrite, source)
        modules[path] = source
    return modules


def _data_url(source: str) -> str:
    return "data:text/javascript;base64," + base64.b64encode(source.encode("utf-8")).decode("ascii")


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element: no `<` can close it or open a comment."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def _error(exc: Exception) -> dict[str, str]:
    return {"code": str(getattr(exc, "code", "") or type(exc).__name__), "message": str(exc)}


def collect(api: CrackTraderAPI, run_id: str, step: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Everything the results page shows of a run, fetched as the page fetches it (same endpoints, same slices).

    An unknown run raises the SDK's error; candles or breakdowns a run lacks are recorded as errors the page
    shows where the part would be, as the dashboard does.
    """
    from cracktrader.client import CrackTraderError

    step("run")
    run = api.get_run(run_id).model_dump(mode="json")
    step("results")
    results = api.get_run_results(run_id, max_points=MAX_CANDLES, limit=MAX_ROWS).model_dump(mode="json")
    errors: dict[str, dict[str, str]] = {}
    candles: dict[str, Any] = {}
    for symbol in run["symbols"]:
        step(f"candles {symbol}")
        try:
            candles[symbol] = api.run_candles(run_id, symbol=symbol, max_points=MAX_CANDLES).model_dump(mode="json")
        except CrackTraderError as exc:
            errors["candles"] = _error(exc)
            break
    step("breakdowns")
    breakdowns: Any = None
    try:
        breakdowns = api.breakdowns(run_id).model_dump(mode="json")
    except CrackTraderError as exc:
        errors["breakdowns"] = _error(exc)
    step("round trips")
    trips: list[Any] = []
    total = 0
    try:
        while len(trips) < MAX_ROWS:
            page = api.round_trips(run_id, limit=min(ROUND_TRIP_PAGE, MAX_ROWS - len(trips)), offset=len(trips))
            total = page.total
            trips.extend(t.model_dump(mode="json") for t in page.items)
            if not page.items or len(trips) >= total:
                break
    except CrackTraderError as exc:
        errors["round_trips"] = _error(exc)
    _share_markers(candles, trips)
    page_of = results.get("page") or {}
    totals = {k: page_of.get(k, {}).get("total", len(results[k])) for k in ("trades", "orders")}
    # Columns named once, not in every row: a long run's fills, orders and round trips are most of the file.
    results["trades"], results["orders"] = _pack(results["trades"]), _pack(results["orders"])
    return {
        "run": run,
        "results": results,
        "help": json.loads((UI_DIR / "metrics-help.json").read_text(encoding="utf-8")),
        "candles": candles,
        "breakdowns": breakdowns,
        "round_trips": _pack(trips),
        "totals": {"round_trips": total, "trades": totals["trades"], "orders": totals["orders"]},
        "errors": errors,
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "version": __version__,
    }


def _pack(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows as `{"$columns": [...], "$rows": [[...]]}` (report/data.js unpacks them; a missing key is null)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return {"$columns": columns, "$rows": [[row.get(k) for k in columns] for row in rows]}


def _count(rows: dict[str, Any]) -> int:
    return len(rows["$rows"])


def _share_markers(candles: dict[str, Any], trips: list[Any]) -> None:
    """Markers that are round trips of the list become their indexes in it (`marker_rows`): each is stored once."""
    row = {json.dumps(t, sort_keys=True): i for i, t in enumerate(trips)}
    for doc in candles.values():
        indexes = [row.get(json.dumps(m, sort_keys=True)) for m in doc["markers"]]
        if all(i is not None for i in indexes):
            doc["marker_rows"] = indexes
            doc["markers"] = []


def _held(data: dict[str, Any]) -> str:
    """A line saying which lists the file holds only in part."""
    held = {
        "round trips": _count(data["round_trips"]),
        "fills": _count(data["results"]["trades"]),
        "orders": _count(data["results"]["orders"]),
    }
    totals = {
        "round trips": data["totals"]["round_trips"],
        **{k: data["totals"][v] for k, v in (("fills", "trades"), ("orders", "orders"))},
    }
    parts = [f"the first {held[k]:,} of {totals[k]:,} {k}" for k in held if totals[k] > held[k]]
    return f" This file holds {', '.join(parts)}." if parts else ""


def render_html(data: dict[str, Any]) -> str:
    """The report file: styles, licences, the embedded data and the inlined modules, no external reference."""
    modules = report_modules()
    imports = {_NAME + path: _data_url(source) for path, source in sorted(modules.items())}
    run = data["run"]
    title = f"{run.get('strategy_name')} · {', '.join(run.get('symbols') or [])} · {run.get('timeframe')}"
    styles = "\n".join((UI_DIR / p).read_text(encoding="utf-8") for p in STYLES)
    # A report has no server to rerun or delete on.
    styles += "\n#rerun, #delete { display: none; }\n.licence pre { white-space: pre-wrap; font-size: 11px; }\n"
    licences = "\n".join(
        f'<details class="licence"><summary>{html.escape(label)}</summary><pre>'
        f"{html.escape((UI_DIR / path).read_text(encoding='utf-8'))}</pre></details>"
        for label, path in LICENCES
    )
    e = html.escape
    header = (
        f'<header class="top"><span class="brand">Cracktrader</span><span class="help">Report of run '
        f"<code>{e(run['run_id'])}</code>, written {e(data['generated_at'])} by cracktrader {e(data['version'])}. "
        f"Candles shown as at most {MAX_CANDLES:,} buckets.{e(_held(data))}</span></header>"
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="cracktrader {e(data["version"])}">
<title>Cracktrader report · {e(title)}</title>
<style>
{styles}
</style>
</head>
<body>
{header}
<main id="view" aria-live="polite"></main>
<footer class="foot">
Charts: TradingView Lightweight Charts™ (Copyright © TradingView, Inc., https://www.tradingview.com/, Apache-2.0)
and uPlot (Copyright © Leon Sorokin, MIT), inlined unmodified in this file. Their licences:
{licences}
</footer>
<script type="application/json" id="report-data">{_script_json(data)}</script>
<script type="importmap">{_script_json({"imports": imports})}</script>
<script type="module">import "{_NAME}{ENTRY}";</script>
</body>
</html>
"""
