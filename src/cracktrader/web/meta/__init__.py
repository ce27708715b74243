"""Web API: meta."""
