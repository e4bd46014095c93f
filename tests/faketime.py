"""A process whose wall clock is off by a given offset, with libfaketime (Debian package ``faketime``), as a
replica on a machine whose clock disagrees with the others'.

Only the wall clock is moved (``FAKETIME_DONT_FAKE_MONOTONIC=1``): machines that disagree on the time of day
still have monotonic clocks that run at the same rate, and with a faked monotonic clock libfaketime 0.9.10 makes
``threading.Event.wait`` hang. That setting has a bug of its own, fixed here by a shim loaded first: libfaketime
0.9.10 answers ``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, ...)``, which every ``time.sleep()`` of Python
3.11 calls, with EINVAL. The shim sends that one call straight to the kernel (the monotonic clock is not faked,
so nothing is lost) and every other call on to libfaketime. It is built with the machine's C compiler, once.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int clock_nanosleep(clockid_t id, int flags, const struct timespec *req, struct timespec *rem) {
    static int (*next)(clockid_t, int, const struct timespec *, struct timespec *);
    if (id == CLOCK_MONOTONIC && (flags & TIMER_ABSTIME)) {
        return syscall(SYS_clock_nanosleep, id, flags, req, rem) == 0 ? 0 : errno;
    }
    if (!next) {
        next = (int (*)(clockid_t, int, const struct timespec *, struct timespec *))dlsym(RTLD_NEXT, "clock_nanosleep");
    }
    return next(id, flags, req, rem);
}
"""


def available() -> str | None:
    """None when skewed processes can be made here, else why not."""
    if not LIBFAKETIME.exists():
        return f"no {LIBFAKETIME} (Debian package faketime)"
    if shutil.which("cc") is None:
        return "no C compiler for the clock_nanosleep shim"
    return None


def _shim() -> Path:
    digest = hashlib.sha256(SHIM.encode()).hexdigest()[:12]
    built = Path(tempfile.gettempdir()) / f"appliance-faketime-shim-{digest}.so"
    if not built.exists():
        source = built.with_suffix(".c")
        source.write_text(SHIM)
        partial = built.with_suffix(".partial")
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(partial), str(source), "-ldl"], check=True,
                       capture_output=True)
        partial.replace(built)
    return built


def skewed(offset: float) -> dict[str, str]:
    """Environment variables that put a process's wall clock ``offset`` seconds off the machine's."""
    return {"LD_PRELOAD": f"{_shim()} {LIBFAKETIME}", "FAKETIME": f"{offset:+.3f}",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1", "FAKETIME_NO_CACHE": "1"}
