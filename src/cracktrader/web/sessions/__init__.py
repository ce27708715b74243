"""`/runs` for paper sessions: start several at once, watch and stop each by id."""
