"""Kept so that jobs written against the documented ``appliance.errors`` keep working: the errors live in
``appliance.kernel.errors`` since the kernel became a package of its own."""

from appliance.kernel.errors import (
                                     ApplianceError,
                                     Cancelled,
                                     ConfigError,
                                     Conflict,
                                     LockLost,
                                     NotFound,
                                     ScheduleError,
                                     Shutdown,
                                     UntrustedService,
)

__all__ = ["ApplianceError", "Cancelled", "ConfigError", "Conflict", "LockLost", "NotFound", "ScheduleError",
           "Shutdown", "UntrustedService"]
