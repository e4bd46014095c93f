-- A late slot whose run would have run into the job's next slot is coalesced into it (appliance.worker.catch_up):
-- its row says 'coalesced'. It ranks above the outcomes a catch-up starts from (skipped_unavailable, abandoned,
-- missed) and below every outcome of a run, so a run of the slot, should one happen anyway, still says what it did.

CREATE OR REPLACE FUNCTION appliance_outcome_rank(outcome text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE outcome
        WHEN 'success' THEN 100 WHEN 'dead_lettered' THEN 90 WHEN 'failed' THEN 80 WHEN 'lease_lost' THEN 70
        WHEN 'cancelled' THEN 60 WHEN 'coalesced' THEN 55 WHEN 'abandoned' THEN 50
        WHEN 'skipped_unavailable' THEN 40 WHEN 'skipped_locked' THEN 30 WHEN 'paused' THEN 20
        WHEN 'missed' THEN 10 ELSE 0 END
$$;
