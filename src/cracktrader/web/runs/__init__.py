"""Web API: runs."""
