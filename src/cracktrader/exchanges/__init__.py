"""Exchanges as the simulator sees them: each market's trading rules (fees, precision, minimums)."""
