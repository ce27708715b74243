"""Start the Cracktrader API server (seed 000's `python scripts/run_web_server.py`)."""

from cracktrader.web.server.main import main

if __name__ == "__main__":
    raise SystemExit(main())
