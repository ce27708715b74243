"""Web API: exchange credentials stored encrypted, per user and name."""
