-- The ledger at a year's size (issue 20; docs/performance.md "Ledger at a year's size"): 10 jobs every second is
-- 315 million slot rows a year. Every read of the ledger is an index range of one job, or of a few rows, so it
-- costs the same at 50 million rows as at 50 thousand; what only grows is paid on disk, not in time.
--
-- Numbered 0070: the kernel's first range (1-9) is full and 10-69 are the packs' (CRM, knowledge); 70-99 is the
-- kernel's second range (appliance.kernel.protocol.db.migrate), so this sorts after every migration of 0003-0009
-- it builds on. No pack migration touches job_slots or job_runs, so applying it after theirs changes nothing.
--
-- Not partitioned by time: every statement of the worker finds its run by run_id (appliance_finish_run,
-- appliance_complete), which a partitioned job_runs could neither keep unique nor find without probing every
-- partition; and retention is per job (its keep_days, keep_failed_days, keep_runs), which dropping a whole
-- partition of every job cannot honour. The indexes below keep the reads bounded instead.

-- appliance audit: a job's committed runs whose fence was issued in the window (besides those of its slots,
-- job_runs_job_slot). Without it, the audit read every run of the job. Only committed runs are in it.
CREATE INDEX job_runs_committed ON job_runs (job, fence_issued_at) WHERE committed_at IS NOT NULL;

-- jobs history and /api/history: the newest slots that did not run (skipped, paused, missed), of a job or of all
-- (read per job, appliance.kernel.protocol.ledger._HISTORY). On a healthy ledger nearly every slot has a run, so
-- without it the history read every slot row of the job (or of the ledger) looking for one that has none. It holds
-- only those rows: the worker's rows never enter it. No index of them by slot alone: the planner would take it for
-- one job too, filtering every other job's rows.
CREATE INDEX job_slots_no_run ON job_slots (job, slot) WHERE run_id IS NULL;

-- A time range of every job (an operator's query of one hour of the ledger): slots are written in time order,
-- so a BRIN index finds it at a small fraction of the btree's size and without its cost on every insert
-- (autosummarize: autovacuum summarises each range of pages once it is full). No query of the appliance needs
-- slots in order across jobs any longer: the dashboard's timeline reads each job's own range of the primary key,
-- the history the slots without a run above.
DROP INDEX job_slots_slot;
CREATE INDEX job_slots_slot ON job_slots USING brin (slot) WITH (autosummarize = on);
