"""Web API: the server's recent log lines."""
