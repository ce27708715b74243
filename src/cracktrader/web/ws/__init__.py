"""Web API: ws."""
