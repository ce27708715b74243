"""Web API: ui."""
