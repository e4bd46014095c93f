"""The project's exceptions: one base class and a few clear children."""


class ApplianceError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(ApplianceError):
    """The configuration is invalid; ``problems`` lists every bad setting."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems))


class ScheduleError(ApplianceError, ValueError):
    """A schedule expression could not be parsed; the message says what was expected.

    ``reason`` is the message without the schedule text, for reports that name the text themselves.
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


class LockLost(ApplianceError):
    """The run's lease was lost (expired, Redis restarted, or deleted by an operator)."""


class UntrustedService(ApplianceError):
    """Redis or PostgreSQL presented a certificate that does not verify: retrying cannot fix it, so the
    process stops (exit code 2) with one line saying what to check."""


class NotFound(ApplianceError):
    """An unknown job, lock or dead letter was named."""


class Conflict(ApplianceError):
    """The action is refused in the current state (for example clearing a live lock)."""


class Shutdown(BaseException):
    """Raised inside a run when the worker is stopping.

    A ``BaseException`` on purpose: a job's ordinary ``except Exception`` must not swallow it.
    """


class Cancelled(Shutdown):
    """Raised at a checkpoint when the run must stop: lease lost or worker shutting down."""
