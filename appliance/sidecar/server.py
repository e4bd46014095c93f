"""gunicorn serving the sidecar, configured from ``Config`` (gunicorn's application API, no config file).

Threads (``gthread``, with every wait for a client bounded: ``appliance.sidecar.slow_clients``) so a slow admin
request never blocks a probe; several processes so one busy process never stalls ``/health/live``. Each
gunicorn worker builds its own app after the fork, so no Redis connection, HTTP client or thread pool is shared
across processes. gunicorn's own log lines go through the appliance's
logging (JSON in production, secrets masked).
"""

from __future__ import annotations

import math
import sys
from typing import Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication
from prometheus_client import multiprocess

from appliance.config import Config

#: A request that takes longer than this is a bug; gunicorn restarts the worker serving it.
REQUEST_TIMEOUT = 30
#: The sidecar's graceful window is SHUTDOWN_TIMEOUT but at most this many seconds. Its requests are probes
#: and admin calls that end within a second or two; supervisord stops it together with the worker
#: (appliance/supervise/waves.py), and the embedded Redis and PostgreSQL only once both are down, so a request
#: that hangs must not hold them back for the worker's whole window.
GRACEFUL_CAP = 2
KEEPALIVE = 5
#: gthread with every wait for a client bounded (imported by gunicorn, not by every reader of these settings).
WORKER_CLASS = "appliance.sidecar.slow_clients.BoundedThreadWorker"


class AppendedLogger(glogging.Logger):
    """gunicorn's logger with its handlers removed: records propagate to the root logger we configured."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        # A client that stalls mid-request (appliance.sidecar.slow_clients) is the client's doing, and anyone can
        # cause it: one line, not a traceback at ERROR per connection.
        if isinstance(sys.exc_info()[1], TimeoutError):
            self.info("closed a connection whose client stalled mid-request")
            return
        super().exception(msg, *args, **kwargs)


def _mark_dead(metrics_dir: str):
    def child_exit(server: Any, worker: Any) -> None:
        # Drop the exited worker's live gauges (RSS, CPU) from the multiprocess files.
        multiprocess.mark_process_dead(worker.pid, metrics_dir)

    return child_exit


def graceful_timeout(config: Config) -> int:
    """Whole seconds gunicorn gives requests in flight on SIGTERM: ``SHUTDOWN_TIMEOUT`` rounded up, at most
    ``GRACEFUL_CAP``."""
    return max(1, min(GRACEFUL_CAP, math.ceil(config.core.shutdown_timeout)))


def options(config: Config) -> dict[str, Any]:
    """gunicorn settings: ``0.0.0.0:$PORT``, graceful timeout from ``graceful_timeout``."""
    side = config.sidecar
    return {
        "bind": [f"0.0.0.0:{config.core.port}"],
        "workers": side.workers,
        "threads": side.threads,
        "worker_class": WORKER_CLASS,
        "graceful_timeout": graceful_timeout(config),
        "timeout": REQUEST_TIMEOUT,
        "keepalive": KEEPALIVE,
        "proc_name": "appliance-sidecar",
        "logger_class": AppendedLogger,
        "loglevel": config.core.log_level,
        "accesslog": None,
        "errorlog": "-",
        "control_socket_disable": True,
        "child_exit": _mark_dead(str(config.core.metrics_dir)),
    }


class SidecarServer(BaseApplication):
    """``SidecarServer(config).run()`` serves until SIGTERM (graceful) or SIGINT/SIGQUIT (quick)."""

    def __init__(self, config: Config):
        self.appliance_config = config
        super().__init__()

    def load_config(self) -> None:
        for key, value in options(self.appliance_config).items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        # Each gunicorn worker builds its app after the fork; Flask and the routes are imported there, not by
        # every command that only needs this module's settings (``appliance run`` reads graceful_timeout).
        from appliance.sidecar import create_app

        return create_app(self.appliance_config)
