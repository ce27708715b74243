"""Web API: strategies (built-in classes and stored presets)."""
