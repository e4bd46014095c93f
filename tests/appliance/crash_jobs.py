"""A custom job module that makes the *worker* process exit 1 while its configuration loads.

``appliance run`` and the sidecar load the same configuration without trouble (the sidecar does not load
jobs at all), so this is how the tests get a worker that crashes at every start while the rest runs.
"""

import sys

if sys.argv[1:2] == ["worker"]:
    print("crash_jobs: exiting on purpose while the worker starts", file=sys.stderr)
    raise SystemExit(1)


def noop(ctx) -> None:
    """Never runs: the worker that would run it exits first."""
