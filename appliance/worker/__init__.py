"""The worker process: the scheduler loop and everything a run needs (leases, retries, alerts)."""
