"""The sweep examples of README.md and docs/sweeps.md run as printed (Python blocks, the SDK's
against a live server, and `cracktrader sweep` lines)."""

from __future__ import annotations

import re
import shlex
from contextlib import ExitStack
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cracktrader.cli import app
from web_support import LiveServer

ROOT = Path(__file__).resolve().parents[1]


def _section(path: Path) -> str:
    text = path.read_text()
    if path.name == "README.md":
        start = text.index("## Parameter sweeps")
        return text[start : text.index("\n## ", start + 1)]
    return text


SOURCES = [ROOT / "README.md", ROOT / "docs" / "sweeps.md"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_python_examples_run(path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", _section(path), flags=re.S)
    assert blocks
    with ExitStack() as stack:
        if any("CrackTraderAPI" in block for block in blocks):
            # The SDK's examples talk to a server: a real one, found as they find it ($CRACKTRADER_BASE_URL).
            monkeypatch.setenv("CRACKTRADER_BASE_URL", stack.enter_context(LiveServer()).base_url)
        for block in blocks:
            exec(compile(block, str(path), "exec"), {})
    assert "sharpe_ratio" in capsys.readouterr().out or path.name == "README.md"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_cli_examples_run_and_write_their_file(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    lines = [
        line
        for block in re.findall(r"```bash\n(.*?)```", _section(path), flags=re.S)
        for line in block.splitlines()
        if line.startswith("cracktrader sweep")
    ]
    assert lines
    for line in lines:
        args = shlex.split(line)[1:]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "SmaCross: best 5 of 90 by sharpe_ratio" in result.output
        assert (tmp_path / args[args.index("--out") + 1]).stat().st_size > 0


def test_walkforward_cli_examples_run_and_write_their_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "docs" / "sweeps.md").read_text()
    lines = [
        line
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
        for line in block.splitlines()
        if line.startswith("cracktrader walkforward")
    ]
    assert len(lines) == 2
    for line in lines:
        args = shlex.split(line)[1:]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "SmaCross: " in result.output
        assert (tmp_path / args[args.index("--out") + 1]).stat().st_size > 0
