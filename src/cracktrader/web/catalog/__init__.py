"""Web API: catalog."""
