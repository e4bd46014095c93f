-- The slot ledger (appliance.ledger): every slot of every job ends as exactly one row of job_slots with its
-- outcome, and every run is a row of job_runs from the moment it holds its lease ("running") to its end.
--
-- Writers of one job serialize on its job_fences row: each function below locks that row first, then
-- job_runs, then job_slots, so they never deadlock one another.

ALTER TABLE job_runs
    ALTER COLUMN finished_at DROP NOT NULL,
    ALTER COLUMN duration_ms DROP NOT NULL,
    ADD COLUMN owner           text,
    ADD COLUMN fence_issued_at timestamptz,
    ADD COLUMN committed_at    timestamptz,
    ADD COLUMN commit_seq      bigint,
    ADD COLUMN reason          text;
CREATE UNIQUE INDEX job_runs_run_id ON job_runs (run_id);
CREATE INDEX job_runs_open ON job_runs (job) WHERE outcome IN ('running', 'retrying');
CREATE INDEX job_runs_job_slot ON job_runs (job, slot);

-- The newest slot whose effect committed, written under the fence in the same transaction as the effect.
ALTER TABLE job_fences ADD COLUMN done_slot timestamptz;

CREATE TABLE job_slots (
    id          bigserial   UNIQUE,
    job         text        NOT NULL,
    slot        timestamptz NOT NULL,
    outcome     text        NOT NULL,
    run_id      text,
    fence       bigint,
    worker      text,
    reason      text,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (job, slot)
);
CREATE INDEX job_slots_slot ON job_slots (slot);

-- Commit order of effects: taken while the fence row is locked, so for one job it is the commit order.
CREATE SEQUENCE job_commit_seq;

-- A slot's outcome may only move up this order (a slot skipped while Redis was down and then caught up
-- ends as the run's outcome; a late "abandoned" never overwrites a success).
CREATE FUNCTION appliance_outcome_rank(outcome text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE outcome
        WHEN 'success' THEN 100 WHEN 'dead_lettered' THEN 90 WHEN 'failed' THEN 80 WHEN 'lease_lost' THEN 70
        WHEN 'cancelled' THEN 60 WHEN 'abandoned' THEN 50 WHEN 'skipped_unavailable' THEN 40
        WHEN 'skipped_locked' THEN 30 WHEN 'paused' THEN 20 WHEN 'missed' THEN 10 ELSE 0 END
$$;

CREATE FUNCTION appliance_record_slot(p_job text, p_slot timestamptz, p_outcome text, p_run_id text,
                                      p_fence bigint, p_worker text, p_reason text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO job_slots AS s (job, slot, outcome, run_id, fence, worker, reason)
    VALUES (p_job, p_slot, p_outcome, p_run_id, p_fence, p_worker, p_reason)
    ON CONFLICT (job, slot) DO UPDATE
        SET outcome = EXCLUDED.outcome, run_id = EXCLUDED.run_id, fence = EXCLUDED.fence,
            worker = EXCLUDED.worker, reason = EXCLUDED.reason, recorded_at = clock_timestamp()
        WHERE appliance_outcome_rank(EXCLUDED.outcome) > appliance_outcome_rank(s.outcome)
$$;

-- Close the open runs of a job whose holder is gone (the caller holds the job's lease, or checked that
-- the holder is dead): a run whose effect committed is a success, any other is abandoned, and so is its
-- slot; a failed attempt whose retry never came ends its slot as failed (unless that retry is the caller:
-- p_keep_run and p_keep_slot name the run in progress). p_only_worker limits it to the runs of one dead worker.
CREATE FUNCTION appliance_reconcile(p_job text, p_keep_run text, p_keep_slot timestamptz, p_reason text,
                                    p_only_worker text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r job_runs%ROWTYPE;
    closed integer := 0;
BEGIN
    PERFORM 1 FROM job_fences WHERE job = p_job FOR UPDATE;
    FOR r IN SELECT * FROM job_runs
             WHERE job = p_job AND outcome IN ('running', 'retrying') AND run_id IS DISTINCT FROM p_keep_run
               AND (p_only_worker IS NULL OR worker = p_only_worker)
             ORDER BY id FOR UPDATE
    LOOP
        IF r.outcome = 'retrying' THEN
            UPDATE job_runs SET outcome = 'failure' WHERE id = r.id;
            IF r.trigger = 'schedule' AND r.slot IS DISTINCT FROM p_keep_slot THEN
                PERFORM appliance_record_slot(p_job, r.slot, 'failed', r.run_id, r.fence, r.worker,
                                              'retry not run: ' || p_reason);
            END IF;
        ELSIF r.committed_at IS NOT NULL THEN
            UPDATE job_runs SET outcome = 'success', finished_at = coalesce(finished_at, committed_at),
                                reason = 'committed; its worker stopped before recording the end'
            WHERE id = r.id;
        ELSE
            UPDATE job_runs SET outcome = 'abandoned', finished_at = clock_timestamp(), reason = p_reason
            WHERE id = r.id;
            IF r.trigger = 'schedule' THEN
                PERFORM appliance_record_slot(p_job, r.slot, 'abandoned', r.run_id, r.fence, r.worker, p_reason);
            END IF;
        END IF;
        closed := closed + 1;
    END LOOP;
    RETURN closed;
END
$$;

-- A run that holds the job's lease: issue its fence, close what earlier holders left open, and record it
-- as running. done is true (and nothing is recorded) when the slot's effect already committed.
CREATE FUNCTION appliance_start_run(p_job text, p_slot timestamptz, p_trigger text, p_run_id text,
                                    p_owner text, p_worker text, p_attempt integer, p_started timestamptz,
                                    OUT o_fence bigint, OUT o_done boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_done_slot timestamptz;
BEGIN
    INSERT INTO job_fences AS f (job, fence) VALUES (p_job, 1)
    ON CONFLICT (job) DO UPDATE SET fence = f.fence + 1, issued_at = now()
    RETURNING f.fence, f.done_slot INTO o_fence, v_done_slot;
    PERFORM appliance_reconcile(p_job, p_run_id, CASE WHEN p_trigger = 'schedule' THEN p_slot END,
                                'its lease ended before it finished');
    o_done := p_trigger = 'schedule' AND v_done_slot IS NOT NULL AND v_done_slot >= p_slot;
    IF NOT o_done THEN
        INSERT INTO job_runs (run_id, job, slot, trigger, attempt, fence, worker, owner, started_at,
                              fence_issued_at, outcome)
        VALUES (p_run_id, p_job, p_slot, p_trigger, p_attempt, o_fence, p_worker, p_owner, p_started,
                clock_timestamp(), 'running');
    END IF;
END
$$;

-- The effect of a run commits: called inside the job's own final transaction (appliance.fencing
-- .complete_slot) or by appliance_finish_run for a job that has no transaction of its own. False when the
-- run's fence is no longer the newest (another run took the job) or its slot is already done.
CREATE FUNCTION appliance_complete(p_run_id text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    r job_runs%ROWTYPE;
BEGIN
    SELECT * INTO r FROM job_runs WHERE run_id = p_run_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF r.committed_at IS NOT NULL THEN
        RETURN false;  -- a run completes its slot once: a second "final" transaction must not commit
    END IF;
    IF r.trigger = 'schedule' THEN
        UPDATE job_fences SET done_slot = r.slot
        WHERE job = r.job AND fence = r.fence AND (done_slot IS NULL OR done_slot < r.slot);
    ELSE
        PERFORM 1 FROM job_fences WHERE job = r.job AND fence = r.fence FOR UPDATE;
    END IF;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE job_runs SET committed_at = clock_timestamp(), commit_seq = nextval('job_commit_seq')
    WHERE id = r.id;
    IF r.trigger = 'schedule' THEN
        PERFORM appliance_record_slot(r.job, r.slot, 'success', r.run_id, r.fence, r.worker, NULL);
    END IF;
    RETURN true;
END
$$;

-- A run ends. p_outcome is the run's (success, retrying, failure, cancelled, lease_lost, abandoned);
-- p_slot_outcome the slot's final outcome, or NULL while a retry is due. A success whose fence is stale is
-- recorded as lease_lost: it never marks its slot done. Returns the outcome recorded.
CREATE FUNCTION appliance_finish_run(p_run_id text, p_outcome text, p_slot_outcome text, p_error text,
                                     p_processed integer, p_summary jsonb, p_duration_ms double precision,
                                     p_reason text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    r job_runs%ROWTYPE;
    v_outcome text := p_outcome;
    v_slot_outcome text := p_slot_outcome;
    v_reason text := p_reason;
BEGIN
    SELECT * INTO r FROM job_runs WHERE run_id = p_run_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM job_fences WHERE job = r.job FOR UPDATE;
    SELECT * INTO r FROM job_runs WHERE run_id = p_run_id;
    IF v_outcome = 'success' AND r.committed_at IS NULL AND NOT appliance_complete(p_run_id) THEN
        v_outcome := 'lease_lost';
        v_slot_outcome := 'lease_lost';
        v_reason := coalesce(v_reason, 'a newer run took the job before this one committed');
    ELSIF r.committed_at IS NOT NULL AND v_outcome <> 'success' THEN
        -- The job's final transaction committed, then the job failed or was stopped: the effect stands.
        v_outcome := 'success';
        v_slot_outcome := 'success';
    END IF;
    UPDATE job_runs SET outcome = v_outcome, finished_at = clock_timestamp(), duration_ms = p_duration_ms,
                        processed = p_processed, error = p_error, summary = p_summary, reason = v_reason
    WHERE id = r.id;
    IF r.trigger = 'schedule' AND v_slot_outcome IS NOT NULL THEN
        PERFORM appliance_record_slot(r.job, r.slot, v_slot_outcome, r.run_id, r.fence, r.worker, v_reason);
    END IF;
    RETURN v_outcome;
END
$$;
