-- Ledger retention (issue 22, point 5): old slot rows are summarised, not lost, so `appliance audit` still proves
-- old windows (per UTC day and outcome: how many slots, the first and the last). A slot is either a row of job_slots
-- or counted in one summary, never both and never neither: the row is deleted and counted in one statement.

CREATE TABLE job_slot_summaries (
    job        text        NOT NULL,
    day        date        NOT NULL,
    outcome    text        NOT NULL,
    slots      integer     NOT NULL,
    first_slot timestamptz NOT NULL,
    last_slot  timestamptz NOT NULL,
    PRIMARY KEY (job, day, outcome)
);

-- Summarise at most p_limit slot rows of p_job older than p_before whose outcome is (p_failed) or is not one of
-- the failed ones; returns how many. Rows another transaction holds are skipped (a replica doing the same).
CREATE FUNCTION appliance_summarise_slots(p_job text, p_before timestamptz, p_failed boolean, p_limit integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_count integer;
BEGIN
    WITH doomed AS (
        DELETE FROM job_slots WHERE (job, slot) IN (
            SELECT job, slot FROM job_slots
            WHERE job = p_job AND slot < p_before
              AND (outcome IN ('failed', 'dead_lettered', 'abandoned', 'lease_lost', 'cancelled')) = p_failed
            ORDER BY slot LIMIT p_limit FOR UPDATE SKIP LOCKED)
        RETURNING job, slot, outcome),
    counted AS (
        SELECT job, (slot AT TIME ZONE 'UTC')::date AS day, outcome, count(*)::integer AS n, min(slot) AS first_slot,
               max(slot) AS last_slot
        FROM doomed GROUP BY 1, 2, 3),
    merged AS (
        INSERT INTO job_slot_summaries AS s (job, day, outcome, slots, first_slot, last_slot)
        SELECT job, day, outcome, n, first_slot, last_slot FROM counted
        ON CONFLICT (job, day, outcome) DO UPDATE
            SET slots = s.slots + EXCLUDED.slots, first_slot = least(s.first_slot, EXCLUDED.first_slot),
                last_slot = greatest(s.last_slot, EXCLUDED.last_slot)
        RETURNING 1)
    SELECT coalesce(sum(n), 0)::integer INTO v_count FROM counted;
    RETURN v_count;
END
$$;
