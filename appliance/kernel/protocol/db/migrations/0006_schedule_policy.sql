-- The schedule policy (issue 21; appliance.kernel.contract.policy): overlap, jitter, calendars, timeouts.
--
-- New slot outcomes, ranked among the others (a slot's row only moves up):
--   timed_out 65           the run passed its timeout: stopped at a checkpoint, or ended hard
--   cancelled_by_newer 62  stopped at a checkpoint because a newer slot's run took the job (overlap = cancel_other)
--   skipped_overlap 35     its job was running and its overlap policy did not start it (skip, a full buffer,
--                          allow at max_concurrent, or a buffered slot whose grace ended)
--   skipped_calendar 25    a calendar excludes it (the reason names the calendar)
-- Runs record when they were planned to start (the nominal slot plus its jitter), the spec version they ran under
-- (0007) and the scope of their lease: 'job' (lock:<job>, the job's newest fence) or 'slot' (overlap = allow:
-- lock:<job>:<slot>, a fence of their own slot, so runs of different slots do not fence each other out).

CREATE OR REPLACE FUNCTION appliance_outcome_rank(outcome text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE outcome
        WHEN 'success' THEN 100 WHEN 'dead_lettered' THEN 90 WHEN 'failed' THEN 80 WHEN 'lease_lost' THEN 70
        WHEN 'timed_out' THEN 65 WHEN 'cancelled_by_newer' THEN 62 WHEN 'cancelled' THEN 60
        WHEN 'coalesced' THEN 55 WHEN 'abandoned' THEN 50 WHEN 'skipped_unavailable' THEN 40
        WHEN 'skipped_overlap' THEN 35 WHEN 'skipped_locked' THEN 30 WHEN 'skipped_calendar' THEN 25
        WHEN 'paused' THEN 20 WHEN 'missed' THEN 10 ELSE 0 END
$$;

ALTER TABLE job_runs
    ADD COLUMN planned_start timestamptz,
    ADD COLUMN spec_version  integer,
    ADD COLUMN lease_scope   text NOT NULL DEFAULT 'job';

-- overlap = allow: the newest fence of each slot, and whether the slot's effect committed.
CREATE TABLE job_slot_fences (
    job   text        NOT NULL,
    slot  timestamptz NOT NULL,
    fence bigint      NOT NULL,
    done  boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (job, slot)
);
CREATE UNIQUE INDEX job_slot_fences_fence ON job_slot_fences (job, fence);

-- A holder of the job's lease closes what earlier holders of it left open; runs of other slots under
-- overlap = allow hold leases of their own and may be alive: only a dead worker's close (p_only_worker) takes them.
CREATE OR REPLACE FUNCTION appliance_reconcile(p_job text, p_keep_run text, p_keep_slot timestamptz, p_reason text,
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
               AND (p_only_worker IS NOT NULL OR lease_scope = 'job')
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

-- A run that holds its lease opens: appliance_start_run for the job's lease; for a slot's own lease (allow) a
-- fence from the job's sequence that is the newest of its slot, closing only earlier runs of that slot. Records
-- the planned start and the spec version. o_done: the slot's effect committed already (nothing recorded).
CREATE FUNCTION appliance_open_run(p_job text, p_slot timestamptz, p_trigger text, p_run_id text, p_owner text,
                                   p_worker text, p_attempt integer, p_started timestamptz,
                                   p_planned timestamptz, p_spec_version integer, p_per_slot boolean,
                                   OUT o_fence bigint, OUT o_done boolean)
LANGUAGE plpgsql AS $$
DECLARE
    r job_runs%ROWTYPE;
BEGIN
    IF NOT p_per_slot OR p_trigger <> 'schedule' THEN
        SELECT s.o_fence, s.o_done INTO o_fence, o_done
        FROM appliance_start_run(p_job, p_slot, p_trigger, p_run_id, p_owner, p_worker, p_attempt, p_started) AS s;
        IF NOT o_done THEN
            UPDATE job_runs SET planned_start = p_planned, spec_version = p_spec_version WHERE run_id = p_run_id;
        END IF;
        RETURN;
    END IF;
    INSERT INTO job_fences AS f (job, fence) VALUES (p_job, 1)
    ON CONFLICT (job) DO UPDATE SET fence = f.fence + 1, issued_at = now()
    RETURNING f.fence INTO o_fence;
    SELECT coalesce(bool_or(done), false) INTO o_done FROM job_slot_fences WHERE job = p_job AND slot = p_slot;
    IF o_done THEN
        RETURN;
    END IF;
    INSERT INTO job_slot_fences AS s (job, slot, fence) VALUES (p_job, p_slot, o_fence)
    ON CONFLICT (job, slot) DO UPDATE SET fence = EXCLUDED.fence;
    FOR r IN SELECT * FROM job_runs WHERE job = p_job AND slot = p_slot AND trigger = 'schedule'
               AND lease_scope = 'slot' AND outcome IN ('running', 'retrying') AND run_id <> p_run_id FOR UPDATE
    LOOP
        IF r.outcome = 'retrying' THEN
            UPDATE job_runs SET outcome = 'failure' WHERE id = r.id;
        ELSE
            UPDATE job_runs SET outcome = 'abandoned', finished_at = clock_timestamp(),
                                reason = 'its lease ended before it finished' WHERE id = r.id;
        END IF;
    END LOOP;
    INSERT INTO job_runs (run_id, job, slot, trigger, attempt, fence, worker, owner, started_at, fence_issued_at,
                          outcome, planned_start, spec_version, lease_scope)
    VALUES (p_run_id, p_job, p_slot, p_trigger, p_attempt, o_fence, p_worker, p_owner, p_started, clock_timestamp(),
            'running', p_planned, p_spec_version, 'slot');
END
$$;

-- The effect of a run commits (appliance.kernel.protocol.fencing.complete_slot, or appliance_finish_run). A run
-- of the job's lease as before; a run of a slot's own lease only while its fence is its slot's newest and the
-- slot is not done (the job's done_slot still only grows).
CREATE OR REPLACE FUNCTION appliance_complete(p_run_id text) RETURNS boolean
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
    IF r.lease_scope = 'slot' THEN
        UPDATE job_slot_fences SET done = true WHERE job = r.job AND slot = r.slot AND fence = r.fence AND NOT done;
        IF NOT FOUND THEN
            RETURN false;
        END IF;
        UPDATE job_fences SET done_slot = greatest(coalesce(done_slot, r.slot), r.slot) WHERE job = r.job;
    ELSIF r.trigger = 'schedule' THEN
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
