"""The lease, fence and ledger protocol that keeps every slot to one effect or one row that says why not: the
Redis keys and Lua scripts of leases, owner tokens, fencing numbers and slot completion in PostgreSQL, the
ledger and its checker, the slot vocabulary, and the cluster state workers publish."""
