-- A tenant's holidays on the appliance's calendar mechanism (appliance.sdk.make_calendar, as a job's calendar):
-- besides its own dates (holidays), the public holidays of a country or one of its regions ('IN', 'DE-BY', the
-- holidays library) and blackout windows in the tenant's zone ('Sat 00:00-Sun 23:59', '12:00-12:59',
-- '2026-12-24/2026-12-26'). Checked where the calls are dialled: a tenant with a value it cannot read is
-- skipped with a log line naming it, as one with malformed business hours is.

ALTER TABLE tenants
    ADD COLUMN holiday_country text CHECK (holiday_country <> ''),
    ADD COLUMN blackouts       text[] NOT NULL DEFAULT '{}';
