"""The worker appliance: a scheduled-job worker, its sidecar and an embedded Qdrant under Supervisor."""

__version__ = "0.1.0"
