"""supervisord's shutdown, in waves instead of one program after another.

supervisord stops its process groups one at a time in reverse priority order, and spends up to a second of
its event loop between two groups. The worker's window (``SHUTDOWN_TIMEOUT``), the sidecar's and Qdrant's
then add up, and ``docker stop``'s 10 s would not be enough. Here the appliance's own programs (priority
100 and up: qdrant, worker, sidecar) get their stop signal together; the embedded services the worker still
needs to record its last runs (redis, postgres: 2-99) stop once those are down; the log tail and the FATAL
listener (below 2) last. While stopping, the event loop wakes every ``STOP_TICK`` seconds, so a program is
SIGKILLed on time when its ``stopwaitsecs`` run out and the next wave starts at once.

Each program's own ``stopsignal``/``stopwaitsecs`` still apply; only the ordering and the loop's tick change.
Written against supervisor 4.2-4.3 (``ordered_stop_groups_phase_1/2`` and ``options.poller``), which
pyproject.toml pins.
"""

from __future__ import annotations

from typing import Any

from supervisor import supervisord

#: Lower bounds of the waves, first wave first.
WAVES = (100, 2, 0)
STOP_TICK = 0.1


def wave_of(priority: int) -> int:
    return next(i for i, bound in enumerate(WAVES) if priority >= bound)


class WaveSupervisor(supervisord.Supervisor):
    #: Set by supervisor's Supervisor while it stops (its process groups in stop order); supervisor has no types.
    stop_groups: list[Any]

    def _current_wave(self) -> list[Any]:
        if not self.stop_groups:
            return []
        first = min(wave_of(group.config.priority) for group in self.stop_groups)
        return [group for group in self.stop_groups if wave_of(group.config.priority) == first]

    def ordered_stop_groups_phase_1(self) -> None:
        for group in self._current_wave():
            group.stop_all()

    def ordered_stop_groups_phase_2(self) -> None:
        if not self.stop_groups:
            return
        done = [group for group in self._current_wave() if not group.get_unstopped_processes()]
        self.stop_groups = [group for group in self.stop_groups if group not in done]

    def runforever(self) -> None:
        poll = self.options.poller.poll

        def poll_while_stopping(timeout: float):
            return poll(min(timeout, STOP_TICK) if self.stopping else timeout)

        self.options.poller.poll = poll_while_stopping
        super().runforever()


def install() -> None:
    """Make ``supervisord.main`` build a ``WaveSupervisor``."""
    supervisord.Supervisor = WaveSupervisor
