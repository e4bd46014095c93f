-- Core tables of the worker: durable run history and fencing numbers.

CREATE TABLE job_runs (
    id          bigserial PRIMARY KEY,
    run_id      text        NOT NULL,
    job         text        NOT NULL,
    slot        timestamptz NOT NULL,
    trigger     text        NOT NULL DEFAULT 'schedule',
    attempt     integer     NOT NULL DEFAULT 1,
    fence       bigint,
    worker      text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    duration_ms double precision NOT NULL,
    outcome     text        NOT NULL,
    processed   integer     NOT NULL DEFAULT 0,
    error       text
);
CREATE INDEX job_runs_job_started ON job_runs (job, started_at DESC);
CREATE INDEX job_runs_started ON job_runs (started_at);

-- One row per job; "fence" only grows. A run takes the next number when it starts and makes its final
-- writes conditional on still holding the newest one (appliance.fencing).
CREATE TABLE job_fences (
    job       text PRIMARY KEY,
    fence     bigint      NOT NULL,
    issued_at timestamptz NOT NULL DEFAULT now()
);
