"""The exit codes of every command and program, in one place: cron, Supervisor and orchestrators act on them.

``CONFIG`` (2) is Supervisor's cue: a program that exits with it is marked FATAL instead of being restarted,
because restarting will not fix a setting (supervisord's own ``usage()`` exits 2 the same way).
"""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    #: The command did not do what it was asked: a service unavailable, the run failed, violations found.
    FAILED = 1
    #: Bad configuration or usage, a refused request (an untrusted server, a damaged archive): fix it first.
    CONFIG = 2
    #: Someone else has it: the job is running elsewhere, the lock is held by a live holder.
    BUSY = 3
    #: ``appliance run`` only: a program went FATAL, so the container should be restarted.
    FATAL = 3
