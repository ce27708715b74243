"""Built-in strategies and the loader for user strategies."""
