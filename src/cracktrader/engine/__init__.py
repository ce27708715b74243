"""Pure computation: strategy API, indicators, simulator kernels, metrics. No I/O."""
