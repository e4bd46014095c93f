-- A run's end written late (kept by its worker while PostgreSQL was down) may arrive after the job's next
-- holder closed the run (appliance_reconcile): a failed attempt whose retry was due then stays closed as a
-- failure instead of being reopened as 'retrying' (nothing would ever close it again).

CREATE OR REPLACE FUNCTION appliance_finish_run(p_run_id text, p_outcome text, p_slot_outcome text, p_error text,
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
    ELSIF v_outcome = 'retrying' AND r.outcome NOT IN ('running', 'retrying') THEN
        -- Closed already by the job's next holder (this end was written late, after an outage): its slot
        -- is that holder's now, so the failed attempt stays closed instead of waiting for a retry.
        v_outcome := 'failure';
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
