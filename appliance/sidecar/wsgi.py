"""The WSGI entry point for running the sidecar under any gunicorn command line::

    gunicorn -k appliance.sidecar.slow_clients.BoundedThreadWorker 'appliance.sidecar.wsgi:app'

(``-k`` keeps a client that stalls mid-request from holding a thread for longer than 2 s.)

``appliance sidecar`` is the usual way (it sets the bind address, workers and timeouts from the
configuration); this module exists for deployments that bring their own gunicorn settings. Bad
configuration exits with code 2, listing every problem.
"""

import sys

from appliance.kernel.runtime.startup import config_or_exit, setup_logs, use_metrics_dir

config = config_or_exit()
use_metrics_dir(config)
setup_logs(config, "sidecar", sys.stdout)

from appliance.sidecar import create_app  # noqa: E402 - after the configuration: a bad one exits first

app = create_app(config)
