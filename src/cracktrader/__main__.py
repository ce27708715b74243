"""`python -m cracktrader`."""

from cracktrader.cli import main

main()
