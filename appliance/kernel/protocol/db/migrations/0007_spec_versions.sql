-- Versions of each job's effective spec (appliance.kernel.contract.spec): a worker that starts with a spec its
-- job never had stores it as the next version; a spec seen before keeps its number. Runs record the version they
-- ran under (job_runs.spec_version, 0006); `appliance schedule diff` compares two versions' fire times.

CREATE TABLE job_specs (
    job        text        NOT NULL,
    version    integer     NOT NULL,
    hash       text        NOT NULL,
    spec       jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text,
    PRIMARY KEY (job, version),
    UNIQUE (job, hash)
);

CREATE FUNCTION appliance_spec_version(p_job text, p_hash text, p_spec jsonb, p_worker text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v integer;
BEGIN
    -- Workers starting together with one new spec store it once.
    PERFORM pg_advisory_xact_lock(hashtext('appliance_spec:' || p_job));
    SELECT version INTO v FROM job_specs WHERE job = p_job AND hash = p_hash;
    IF FOUND THEN
        RETURN v;
    END IF;
    SELECT coalesce(max(version), 0) + 1 INTO v FROM job_specs WHERE job = p_job;
    INSERT INTO job_specs (job, version, hash, spec, created_by) VALUES (p_job, v, p_hash, p_spec, p_worker);
    RETURN v;
END
$$;
