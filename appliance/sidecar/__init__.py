"""The sidecar: health, metrics, admin API and dashboard on port 3002, served by gunicorn.

It reads what the workers publish in Redis (``appliance.kernel.protocol.state.ClusterState``) and the Prometheus
multiprocess files; it never imports the worker's runtime.
"""

from appliance.sidecar.app import create_app

__all__ = ["create_app"]
