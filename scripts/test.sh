#!/usr/bin/env bash
# Install the project with its test dependencies into .venv, then lint, type-check and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[all]'
# The docs' Node examples and the JavaScript SDK's tests: axios, jsdom, ws, typescript, and the SDK linked.
npm ci --prefix tests/js --no-audit --no-fund --silent
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"
