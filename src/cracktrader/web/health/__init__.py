"""Web API: health."""
