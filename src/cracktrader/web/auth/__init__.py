"""Web authentication: login, refresh, logout, me, API keys, and the dependencies that enforce auth."""
