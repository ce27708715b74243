"""The README's Web API curl example runs as printed, twice in a row: start, status, results, reset, start again."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from web_support import LiveServer, live_server

README = Path(__file__).resolve().parent.parent / "README.md"
DOC_BASE = "http://127.0.0.1:8000"
RUN_TIMEOUT_S = 60


def readme_curl_commands() -> list[str]:
    """The curl commands of the README's Web API section, in order, continuations joined, comments left out."""
    text = README.read_text()
    section = text[text.index("## Web API") :]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None, "no bash block in the README's Web API section"
    joined = block.group(1).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def _curl(command: str, srv: LiveServer) -> tuple[int, Any]:
    """Run one README command with the real curl against `srv`; (HTTP status, JSON body)."""
    command = command.replace(DOC_BASE, srv.base_url)
    done = subprocess.run(
        ["bash", "-c", f"{command} --silent --show-error --write-out '\\n%{{http_code}}'"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, (command, done.stderr)
    body, _, code = done.stdout.rpartition("\n")
    return int(code), json.loads(body)


def test_readme_curl_sequence_start_status_results_reset_runs_twice_in_a_row() -> None:
    assert shutil.which("curl"), "curl is not installed: apt-get install curl"
    commands = readme_curl_commands()
    kinds = [c.split("/api/v1/")[1].split()[0].strip("'\"") for c in commands]
    assert kinds == ["run/backtest", "status", "results", "run/reset"]
    start, status_cmd, results_cmd, reset = commands
    with live_server() as srv:
        for attempt in (1, 2):
            code, started = _curl(start, srv)
            assert code == 200 and started["status"] == "starting", (attempt, started)
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while (status := _curl(status_cmd, srv)[1])["status"] in ("starting", "running"):
                assert time.monotonic() < deadline, status
                time.sleep(0.1)
            assert status["status"] == "completed" and status["run_id"] == started["run_id"], status
            code, results = _curl(results_cmd, srv)
            assert code == 200 and results["run_id"] == started["run_id"] and results["status"] == "completed"
            if attempt == 1:
                # Without the reset the next start is refused: what the README's last command is for.
                code, refused = _curl(start, srv)
                assert code == 409 and refused["error"]["code"] == "RUN_ALREADY_ACTIVE"
                assert "DELETE /api/v1/run/reset" in refused["error"]["message"]
            code, done = _curl(reset, srv)
            assert code == 200 and done == {
                "run_id": started["run_id"],
                "status": "idle",
                "message": "Runner reset to idle",
            }
