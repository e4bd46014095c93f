-- Operator actions (issue 22): parameters stored with a run, the audit log (who changed what), the job specs
-- as workers last started with them, and backfills: slots of the past run on purpose, under the job's lease and
-- fence, each slot's effect committed at most once. No slot outcome is added: appliance_outcome_rank is unchanged.

-- What a triggered run was given (validated against the job's declared parameters, secrets masked).
ALTER TABLE job_runs ADD COLUMN params jsonb;

-- The audit log, the record of truth of every operator action: pause, resume, trigger, backfill, lock clear,
-- dead-letter retry and drop, and a job's spec changing. Apart from `appliance audit`, the ledger's checker.
CREATE TABLE audit_log (
    id     bigserial   PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor  text        NOT NULL,
    action text        NOT NULL,
    target text        NOT NULL,
    reason text,
    before jsonb,
    after  jsonb,
    detail text
);
CREATE INDEX audit_log_at ON audit_log (at);

-- Each job's spec versions are migration 0007's job_specs; a new one is audited once (appliance.worker.specs).

-- A backfill and its planned slots. Workers claim planned slots (FOR UPDATE SKIP LOCKED) and run each under the
-- job's lease; a slot ends "done" with the outcome its run left in the ledger, or "committed" when its effect
-- had committed already (by the schedule, or by another backfill) by the time it was claimed.
CREATE TABLE backfills (
    id           text        PRIMARY KEY,
    job          text        NOT NULL,
    from_at      timestamptz NOT NULL,
    to_at        timestamptz NOT NULL,
    selection    text        NOT NULL,
    max_parallel integer     NOT NULL,
    actor        text        NOT NULL,
    reason       text,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE backfill_slots (
    backfill_id text        NOT NULL REFERENCES backfills (id) ON DELETE CASCADE,
    job         text        NOT NULL,
    slot        timestamptz NOT NULL,
    state       text        NOT NULL DEFAULT 'planned',
    worker      text,
    claimed_at  timestamptz,
    run_id      text,
    outcome     text,
    finished_at timestamptz,
    PRIMARY KEY (backfill_id, slot)
);
-- A claim reads one backfill's claimed slots (to bound them) and its oldest planned one: both index ranges.
CREATE INDEX backfill_slots_state ON backfill_slots (backfill_id, state, slot);

-- Whether a slot's effect committed: its row says success, or a run of it (scheduled or backfilled) committed.
CREATE FUNCTION appliance_slot_committed(p_job text, p_slot timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM job_slots WHERE job = p_job AND slot = p_slot AND outcome = 'success')
        OR EXISTS (SELECT 1 FROM job_runs WHERE job = p_job AND slot = p_slot AND committed_at IS NOT NULL
                   AND trigger IN ('schedule', 'backfill'))
$$;

-- A backfill run that holds the job's lease: done (and nothing recorded) when the slot's effect committed
-- already; otherwise appliance_start_run issues its fence and records it running (trigger 'backfill'). The
-- job's fence row is locked first, as every writer of the job does.
CREATE FUNCTION appliance_start_backfill(p_job text, p_slot timestamptz, p_run_id text, p_owner text,
                                         p_worker text, p_attempt integer, p_started timestamptz,
                                         OUT o_fence bigint, OUT o_done boolean)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_fences (job, fence) VALUES (p_job, 0) ON CONFLICT (job) DO NOTHING;
    PERFORM 1 FROM job_fences WHERE job = p_job FOR UPDATE;
    o_done := appliance_slot_committed(p_job, p_slot);
    IF NOT o_done THEN
        SELECT s.o_fence INTO o_fence
        FROM appliance_start_run(p_job, p_slot, 'backfill', p_run_id, p_owner, p_worker, p_attempt, p_started) s;
    END IF;
END
$$;

-- The effect of a backfill run commits: under the newest fence (the fence row stays locked until the caller's
-- transaction ends) and only if no run of that slot committed before. The live done slot is not moved: it is
-- the schedule's, and a backfilled slot lies behind it.
CREATE FUNCTION appliance_complete_backfill(p_run_id text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    r job_runs%ROWTYPE;
BEGIN
    SELECT * INTO r FROM job_runs WHERE run_id = p_run_id;
    IF NOT FOUND OR r.committed_at IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM 1 FROM job_fences WHERE job = r.job AND fence = r.fence FOR UPDATE;
    IF NOT FOUND OR appliance_slot_committed(r.job, r.slot) THEN
        RETURN false;
    END IF;
    UPDATE job_runs SET committed_at = clock_timestamp(), commit_seq = nextval('job_commit_seq') WHERE id = r.id;
    PERFORM appliance_record_slot(r.job, r.slot, 'success', r.run_id, r.fence, r.worker, 'backfill');
    RETURN true;
END
$$;

-- What appliance.kernel.protocol.fencing.complete_slot calls: a backfill run completes its historical slot,
-- any other run as before (appliance_complete).
CREATE FUNCTION appliance_complete_slot(p_run_id text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM job_runs WHERE run_id = p_run_id AND trigger = 'backfill') THEN
        RETURN appliance_complete_backfill(p_run_id);
    END IF;
    RETURN appliance_complete(p_run_id);
END
$$;

-- A backfill run ends: a success not committed yet completes here (appliance_complete_backfill; refused, it is
-- lease_lost), then appliance_finish_run records the run, and the slot's row gets the run's outcome (a row only
-- moves up the outcomes' order: a slot already done keeps its success).
CREATE FUNCTION appliance_finish_backfill(p_run_id text, p_outcome text, p_slot_outcome text, p_error text,
                                          p_processed integer, p_summary jsonb, p_duration_ms double precision,
                                          p_reason text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    r job_runs%ROWTYPE;
    v_outcome text := p_outcome;
    v_slot_outcome text := p_slot_outcome;
    v_reason text := p_reason;
    v_recorded text;
BEGIN
    SELECT * INTO r FROM job_runs WHERE run_id = p_run_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM job_fences WHERE job = r.job FOR UPDATE;
    SELECT * INTO r FROM job_runs WHERE run_id = p_run_id;
    IF v_outcome = 'success' AND r.committed_at IS NULL AND NOT appliance_complete_backfill(p_run_id) THEN
        v_outcome := 'lease_lost';
        v_slot_outcome := 'lease_lost';
        v_reason := coalesce(v_reason, 'the slot was committed already, or a newer run took the job, first');
    END IF;
    v_recorded := appliance_finish_run(p_run_id, v_outcome, NULL, p_error, p_processed, p_summary, p_duration_ms,
                                       v_reason);
    IF v_slot_outcome IS NOT NULL THEN
        PERFORM appliance_record_slot(r.job, r.slot, CASE WHEN v_recorded = 'success' THEN 'success'
                                      ELSE v_slot_outcome END, r.run_id, r.fence, r.worker, v_reason);
    END IF;
    RETURN v_recorded;
END
$$;
