"""The scheduling kernel: schedules, leases, fences, the ledger, cluster state and the run contract.

It knows no job pack and no process: the processes (``appliance.worker``, ``appliance.sidecar``,
``appliance.supervise``, ``appliance.commands``) use it, and the job packs plug into it through
``appliance.kernel.contract.packs.Pack``. Below it lies only the configuration (``appliance.config``).
"""
