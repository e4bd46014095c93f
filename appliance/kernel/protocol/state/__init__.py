"""The cluster's shared state in Redis: what workers publish and what the CLI and the sidecar read and change.

One module per concern, each reading and writing its keys (``appliance.kernel.protocol.keys``) and returning
frozen dataclasses whose ``to_json()`` is the JSON the CLI prints and the sidecar serves:

| concern | module | records |
| --- | --- | --- |
| the published job table, each job as the cluster shows it | ``jobs`` | ``PublishedJob``, ``JobView`` |
| pausing one job or every job | ``pauses`` | ``Pause`` |
| triggers (run a job once now) | ``triggers`` | ``Trigger`` |
| runs in progress and finished | ``runs`` | ``RunInProgress``, ``RunRecord`` |
| recent runs and the counters | ``history`` | ``RunRecord``, ``dict[str, int]`` |
| worker heartbeats | ``workers`` | ``Beat``, ``WorkerView`` |
| the leases held (``lock:*``) | ``leases`` | ``LeaseView`` |
| dead letters | ``dead_letters`` | ``DeadLetter`` |
| the audit trail | ``audit_trail`` | ``AuditEntry`` |
| circuit breakers | ``breakers`` | ``BreakerView`` |

Nothing here imports the worker's runtime, so the sidecar uses it directly.
"""

from __future__ import annotations

import redis

from appliance.kernel.protocol.state.audit_trail import AuditTrail
from appliance.kernel.protocol.state.breakers import Breakers
from appliance.kernel.protocol.state.dead_letters import DeadLetters
from appliance.kernel.protocol.state.history import History
from appliance.kernel.protocol.state.jobs import JobTable
from appliance.kernel.protocol.state.leases import Leases
from appliance.kernel.protocol.state.pauses import Pauses
from appliance.kernel.protocol.state.triggers import Triggers
from appliance.kernel.protocol.state.workers import Workers
from appliance.kernel.runtime.clock import SYSTEM, Clock


class ClusterState:
    """The state shared by every worker on one Redis, by concern: ``state.jobs.views()``,
    ``state.triggers.request(...)``, ``state.leases.clear(...)``...

    ``clock`` stamps what is written (pause, trigger, audit and dead-letter times) and measures the ages read
    back (heartbeats, leases, open breakers).
    """

    def __init__(self, client: redis.Redis, clock: Clock = SYSTEM):
        self.client = client
        self.clock = clock
        self.jobs = JobTable(client)
        self.pauses = Pauses(client, clock, self.jobs.require)
        self.triggers = Triggers(client, clock, self.jobs)
        self.history = History(client, self.jobs)
        self.workers = Workers(client, clock)
        self.leases = Leases(client, clock, self.workers)
        self.dead_letters = DeadLetters(client, clock, self.triggers)
        self.audit = AuditTrail(client, clock)
        self.breakers = Breakers(client, clock)
