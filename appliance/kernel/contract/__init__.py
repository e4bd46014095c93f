"""The job contract: what a job and a job pack declare (``JobSpec``, ``Pack``), what a run receives
(``RunContext``), and the catalog that resolves declared jobs into the settings a worker runs them with.
Jobs and packs reach it through ``appliance.sdk``."""
