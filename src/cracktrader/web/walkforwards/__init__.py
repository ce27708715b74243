"""Walk-forwards and combinatorial purged CV over HTTP."""
