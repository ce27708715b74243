"""Run lifecycle: configuration, execution against the engine and data layer, and the results document."""
