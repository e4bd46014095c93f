"""supervisord in the foreground as PID 1, with an exit code that means something.

``appliance run`` execs ``python -m appliance.supervise.pid1 MARKER -n -c supervisord.conf``. This runs
supervisord's own ``main()`` in this process, so supervisord is PID 1 in the container: it receives
``docker stop``'s SIGTERM and stops its programs, and it reaps every child,
including orphans re-parented to PID 1 (it calls ``waitpid(-1)``). Its shutdown runs in waves
(``appliance.supervise.waves``) so that the whole stop fits ``SHUTDOWN_TIMEOUT`` + 2 s. A full disk costs its
log files a line each on stderr, never supervisord itself (``appliance.supervise.logfiles``).

supervisord itself always exits 0 after an orderly shutdown. Exit codes here:

- 0: stopped on request (SIGTERM, SIGINT, ``supervisorctl shutdown``);
- 3 (``ExitCode.FATAL``): a critical program went FATAL and the listener in ``appliance.supervise.fatal``
  stopped the appliance; the marker file it wrote names the program.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from supervisor import supervisord

from appliance.kernel.runtime.exits import ExitCode
from appliance.supervise import logfiles, waves


def main(argv: list[str]) -> int:
    marker, supervisord_args = Path(argv[0]), argv[1:]
    waves.install()
    logfiles.install()
    supervisord.main(supervisord_args)
    if not marker.exists():
        return 0
    try:
        program = json.loads(marker.read_text()).get("program", "?")
    except ValueError:
        program = "?"
    print(f"appliance: stopped because program {program} went FATAL (see its -error.log)", file=sys.stderr)
    return ExitCode.FATAL


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
