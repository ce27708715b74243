"""The dashboard's shipped files: metric help that agrees with docs/metrics.md, vendored libraries pinned with
their licences, nothing loaded from elsewhere."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from cracktrader.engine.metrics import METRIC_KEYS
from cracktrader.web.ui.router import UI_DIR

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("gen_metrics_help", ROOT / "scripts" / "gen_metrics_help.py")
assert _spec is not None and _spec.loader is not None
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)


def test_metrics_help_json_is_what_the_metrics_doc_generates() -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    shipped = (UI_DIR / "metrics-help.json").read_text(encoding="utf-8")
    assert shipped == gen.render(doc), "run python scripts/gen_metrics_help.py"


def test_every_metric_the_engine_reports_has_a_help_line_and_a_format() -> None:
    help_ = json.loads((UI_DIR / "metrics-help.json").read_text(encoding="utf-8"))
    assert set(help_) == set(METRIC_KEYS)
    assert help_["max_drawdown"]["kind"] == "percent"
    assert help_["fees_paid"]["kind"] == "money"
    assert help_["max_drawdown_duration_days"]["kind"] == "days"


def test_vendored_libraries_are_pinned_and_keep_their_licences() -> None:
    vendor = UI_DIR / "vendor"
    versions = (vendor / "VERSIONS.txt").read_text(encoding="utf-8")
    lw = (vendor / "lightweight-charts" / "lightweight-charts.standalone.production.mjs").read_text(encoding="utf-8")
    assert "lightweight-charts 5.2.1" in versions and "Lightweight Charts™ v5.2.1" in lw[:300]
    assert "uplot 1.6.32" in versions
    assert "Apache License" in (vendor / "lightweight-charts" / "LICENSE").read_text(encoding="utf-8")
    assert "TradingView" in (vendor / "lightweight-charts" / "NOTICE").read_text(encoding="utf-8")
    assert "MIT License" in (vendor / "uplot" / "LICENSE").read_text(encoding="utf-8")
    # Lightweight Charts' licence asks for its attribution notice and a link to TradingView on the page.
    page = (UI_DIR / "index.html").read_text(encoding="utf-8")
    assert 'href="https://www.tradingview.com/"' in page and "TradingView Lightweight Charts™" in page


def test_the_dashboard_loads_nothing_from_another_origin() -> None:
    for path in UI_DIR.rglob("*"):
        if path.suffix not in {".js", ".html", ".css"} or "vendor" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        # Loads only: src=, <link href=, import and url(); an <a href> to TradingView is a link, not a load.
        urls = re.findall(r"""(?:src=|<link[^>]*href=|import\s*\(?|from\s+|url\()\s*["']?(?:https?:)?//""", text)
        assert not urls, (path, urls)


def test_every_http_and_ws_call_lives_in_the_api_module() -> None:
    for path in UI_DIR.rglob("*.js"):
        if "vendor" in path.parts or path.name == "api.js":
            continue
        text = path.read_text(encoding="utf-8")
        assert "fetch(" not in text and "new WebSocket" not in text, path
