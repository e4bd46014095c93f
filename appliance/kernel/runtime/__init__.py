"""Runtime infrastructure every process shares: the injected clock, the clients of Redis and PostgreSQL, logs,
metrics, the secret registry, circuit breakers, freshness, the disk, atomic files and the start of every entry
point."""
