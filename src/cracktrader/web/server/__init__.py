"""Web API: server."""
