"""Where samples and decisions live: in memory (one process) or in Redis (shared)."""
