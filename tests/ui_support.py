"""Browser tests' helpers: Debian's Chromium under Playwright, pages that record console errors and CSP
violations, and runs made through the API to look at."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
# The flags this machine needs (see the environment notes): no sandbox as root, no network beyond loopback.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}
# Recorded in the page before any of its scripts run; CSP violations also reach the console, this keeps their detail.
WATCH_CSP = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
"""


def screenshot_dir() -> Path:
    """Where the tests write screenshots: $CRACKTRADER_UI_SCREENSHOTS, else a fresh temporary folder."""
    chosen = os.environ.get("CRACKTRADER_UI_SCREENSHOTS")
    path = Path(chosen) if chosen else Path(tempfile.gettempdir()) / "cracktrader-ui-screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser_context() -> Iterator[Any]:
    """One Chromium with a fresh, empty profile per test module (each test opens its own pages).

    Module scope, not session: Playwright's sync API holds an event loop on this thread while it is open, and the
    suite's async tests in later modules need the thread free.
    """
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("/usr/bin/chromium is missing: scripts/test.sh installs it (apt-get install chromium)")
        pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it)")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="cracktrader-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, viewport=DESKTOP
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class WatchedPage:
    """A page that records console errors, uncaught exceptions and CSP violations."""

    def __init__(self, context: Any, viewport: dict[str, int] = DESKTOP) -> None:
        self.page = context.new_page()
        self.page.set_viewport_size(viewport)
        self.errors: list[str] = []
        self.page.add_init_script(WATCH_CSP)
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def open(self, base_url: str, route: str) -> Any:
        """Go to `/ui#/route` and wait until the page has rendered (`body[data-ready]`)."""
        self.page.goto(f"{base_url}/ui#/{route}")
        self.page.wait_for_selector("body[data-ready]", timeout=30_000)
        return self.page

    def assert_clean(self, *expected_statuses: int) -> None:
        """No console error, uncaught exception or CSP violation so far.

        `expected_statuses`: error answers the test provoked on purpose; Chromium logs each failed load to the
        console, so exactly those lines are allowed.
        """
        csp = self.page.evaluate("window.__csp || []")
        failed_load = "console: Failed to load resource: the server responded with a status of"
        allowed = {f"{failed_load} {s}" for s in expected_statuses}
        errors = [e for e in self.errors if not any(e.startswith(a) for a in allowed)]
        assert not errors and not csp, (errors, csp)

    def close(self) -> None:
        self.page.close()


def wait_run(client: httpx.Client, run_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """Poll a run until it has finished (the timeout is a safety net)."""
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = client.get(f"/api/v1/runs/{run_id}").json()
        if run["status"] in ("completed", "failed", "stopped"):
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.05)


def backtest(client: httpx.Client, **overrides: Any) -> str:
    """Run a short synthetic backtest by id and wait for it; its run id."""
    body = {
        "mode": "backtest",
        "strategy_name": "SmaCross",
        "symbols": ["BTC/USDT"],
        "timeframe": "1h",
        "start_date": "2024-01-01",
        "end_date": "2024-03-01",
        "exchange": "synthetic",
        **overrides,
    }
    r = client.post("/api/v1/runs", json=body)
    assert r.status_code == 201, r.text
    run_id: str = r.json()["run_id"]
    assert wait_run(client, run_id)["status"] == "completed"
    return run_id


def paper_session(client: httpx.Client) -> str:
    """Start a paper session on synthetic 1 s candles (it runs until stopped); its run id."""
    r = client.post(
        "/api/v1/runs",
        json={
            "mode": "paper",
            "strategy_name": "SmaCross",
            "strategy_params": {"fast": 2, "slow": 3},
            "symbols": ["BTC/USDT"],
            "timeframe": "1s",
            "exchange": "synthetic",
        },
    )
    assert r.status_code == 201, r.text
    return str(r.json()["run_id"])
