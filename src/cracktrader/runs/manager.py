"""Compatibility name: the run registry (runs/registry.py) replaced the single-run manager."""

from __future__ import annotations

from cracktrader.runs.registry import BacktestRun, RunRegistry
from cracktrader.runs.worker import warm_kernels as _warm_kernels

RunManager = RunRegistry

__all__ = ["BacktestRun", "RunManager", "RunRegistry", "_warm_kernels"]
