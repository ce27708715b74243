#!/usr/bin/env bash
# The main job: install Cracktrader with its web server, start the server on 127.0.0.1:8000, run a backtest on the
# built-in offline `synthetic` exchange through the HTTP API, print its summary, and stop the server.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q -e '.[web]'
PORT="${CRACKTRADER_API_PORT:-8000}"
.venv/bin/cracktrader serve --port "$PORT" --log-level warning &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
.venv/bin/python scripts/backtest_via_api.py --url "http://127.0.0.1:$PORT" "$@"
