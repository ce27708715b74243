"""Web API: a run's chart (candles, markers, indicators), round trips and breakdowns."""
