"""Users, passwords, JWT access tokens, rotating refresh tokens, API keys and login rate limiting."""
