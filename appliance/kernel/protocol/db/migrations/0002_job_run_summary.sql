-- What a run's function returned (a small JSON object such as {"sent": 120}), kept with the run.
ALTER TABLE job_runs ADD COLUMN summary jsonb;
