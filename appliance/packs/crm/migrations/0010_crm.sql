-- The CRM job pack: tenants, agents, leads, campaigns and their recipients, reminders, the call queue, the
-- outbox of every message handed to a channel, and an activity log.
--
-- Rows that a job sends are claimed before sending: status 'sending' (or 'dialing') plus claim_fence, the
-- fencing number of the run that claimed them. That run holds a PostgreSQL advisory lock on its fence while it
-- lives, so a later run can tell a live claim from an orphan left by a crash (appliance/jobs/claims.py).

CREATE TABLE tenants (
    id                   bigserial PRIMARY KEY,
    name                 text        NOT NULL,
    plan                 text        NOT NULL DEFAULT 'trial' CHECK (plan <> ''),
    status               text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    trial_ends_at        timestamptz,
    suspended_at         timestamptz,
    timezone             text        NOT NULL DEFAULT 'UTC',
    -- {"mon": ["09:00-18:00"], ...}: weekday -> opening intervals in local wall time (appliance/jobs/hours.py)
    business_hours       jsonb       NOT NULL DEFAULT
        '{"mon": ["09:00-18:00"], "tue": ["09:00-18:00"], "wed": ["09:00-18:00"], "thu": ["09:00-18:00"], "fri": ["09:00-18:00"]}',
    holidays             date[]      NOT NULL DEFAULT '{}',
    -- NULL takes the appliance-wide CAMPAIGN_RATE_LIMIT / CALL_MAX_CONCURRENT
    send_rate_per_minute integer CHECK (send_rate_per_minute >= 0),
    max_concurrent_calls integer CHECK (max_concurrent_calls >= 1),
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenants_trial_due ON tenants (trial_ends_at) WHERE plan = 'trial' AND status = 'active';

CREATE TABLE agents (
    id         bigserial PRIMARY KEY,
    tenant_id  bigint      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       text        NOT NULL,
    email      text        NOT NULL,
    phone      text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agents_tenant ON agents (tenant_id);

CREATE TABLE leads (
    id                bigserial PRIMARY KEY,
    tenant_id         bigint      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    owner_id          bigint      REFERENCES agents (id) ON DELETE SET NULL,
    name              text        NOT NULL,
    email             text,
    phone             text,
    status            text        NOT NULL DEFAULT 'new',
    next_follow_up_at timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX leads_tenant ON leads (tenant_id);
CREATE INDEX leads_follow_up ON leads (next_follow_up_at) WHERE next_follow_up_at IS NOT NULL;

CREATE TABLE campaigns (
    id           bigserial PRIMARY KEY,
    tenant_id    bigint      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         text        NOT NULL,
    channel      text        NOT NULL CHECK (channel IN ('email', 'whatsapp')),
    subject      text        NOT NULL DEFAULT '',
    template     text        NOT NULL,
    status       text        NOT NULL DEFAULT 'draft'
        CHECK (status IN ('draft', 'scheduled', 'sending', 'paused', 'completed', 'cancelled')),
    scheduled_at timestamptz,
    started_at   timestamptz,
    completed_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX campaigns_due ON campaigns (scheduled_at) WHERE status = 'scheduled';
CREATE INDEX campaigns_sending ON campaigns (tenant_id) WHERE status = 'sending';

CREATE TABLE campaign_recipients (
    id                  bigserial PRIMARY KEY,
    campaign_id         bigint      NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    lead_id             bigint      REFERENCES leads (id) ON DELETE SET NULL,
    contact             text        NOT NULL,  -- an email address or a phone number, by the campaign's channel
    name                text        NOT NULL DEFAULT '',
    variables           jsonb       NOT NULL DEFAULT '{}',
    status              text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'unknown')),
    attempts            integer     NOT NULL DEFAULT 0,
    next_attempt_at     timestamptz,
    claim_fence         bigint,
    claimed_at          timestamptz,
    error               text,
    sent_at             timestamptz,
    provider_message_id text,
    UNIQUE (campaign_id, contact)
);
CREATE INDEX campaign_recipients_pending ON campaign_recipients (campaign_id, id) WHERE status = 'pending';
CREATE INDEX campaign_recipients_sending ON campaign_recipients (claim_fence) WHERE status = 'sending';

-- One reminder per follow-up: a lead's next_follow_up_at, once due, yields exactly one row here.
CREATE TABLE reminders (
    id                  bigserial PRIMARY KEY,
    tenant_id           bigint      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    lead_id             bigint      NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
    agent_id            bigint      REFERENCES agents (id) ON DELETE SET NULL,
    due_at              timestamptz NOT NULL,
    status              text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'unknown')),
    attempts            integer     NOT NULL DEFAULT 0,
    next_attempt_at     timestamptz,
    claim_fence         bigint,
    claimed_at          timestamptz,
    error               text,
    sent_at             timestamptz,
    provider_message_id text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (lead_id, due_at)
);
CREATE INDEX reminders_pending ON reminders (id) WHERE status = 'pending';
CREATE INDEX reminders_sending ON reminders (claim_fence) WHERE status = 'sending';

CREATE TABLE calls (
    id               bigserial PRIMARY KEY,
    tenant_id        bigint      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    lead_id          bigint      REFERENCES leads (id) ON DELETE SET NULL,
    phone            text        NOT NULL,
    status           text        NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'dialing', 'completed', 'failed', 'cancelled')),
    scheduled_at     timestamptz NOT NULL DEFAULT now(),
    attempts         integer     NOT NULL DEFAULT 0,
    claim_fence      bigint,
    dialed_at        timestamptz,
    provider_call_id text,
    outcome          text,
    error            text,
    finished_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX calls_queued ON calls (tenant_id, scheduled_at) WHERE status = 'queued';
CREATE INDEX calls_dialing ON calls (tenant_id) WHERE status = 'dialing';
CREATE INDEX calls_finished ON calls (finished_at) WHERE status IN ('completed', 'failed', 'cancelled');

-- Call records: one row per dial attempt and its result.
CREATE TABLE call_attempts (
    id               bigserial PRIMARY KEY,
    call_id          bigint      NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    tenant_id        bigint      NOT NULL,
    attempt          integer     NOT NULL,
    started_at       timestamptz NOT NULL,
    ended_at         timestamptz,
    provider_call_id text,
    outcome          text,
    error            text
);
CREATE INDEX call_attempts_call ON call_attempts (call_id);
CREATE INDEX call_attempts_started ON call_attempts (started_at);

-- Every message handed to a channel, written before the hand-off. idempotency_key names the thing sent
-- (campaign-recipient:ID, reminder:ID, call:ID:ATTEMPT) and is also the key the providers de-duplicate on.
CREATE TABLE outbox (
    id                  bigserial PRIMARY KEY,
    idempotency_key     text        NOT NULL UNIQUE,
    tenant_id           bigint      REFERENCES tenants (id) ON DELETE CASCADE,
    channel             text        NOT NULL CHECK (channel IN ('email', 'whatsapp', 'voice')),
    transport           text        NOT NULL CHECK (transport IN ('outbox', 'smtp', 'http')),
    recipient           text        NOT NULL,
    subject             text        NOT NULL DEFAULT '',
    body                text        NOT NULL DEFAULT '',
    -- recorded: kept here only (CHANNEL=outbox); sending: handed to a provider, no answer yet; retry: a
    -- transient failure, may be sent again; unknown: the answer was lost and the channel cannot de-duplicate
    status              text        NOT NULL
        CHECK (status IN ('recorded', 'sending', 'sent', 'failed', 'retry', 'unknown')),
    provider_message_id text,
    error               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz
);
CREATE INDEX outbox_tenant_created ON outbox (tenant_id, created_at);
CREATE INDEX outbox_created ON outbox (created_at);

-- What the jobs did that a person may want to see: trial expiries, campaign transitions, reconciliations.
CREATE TABLE activity (
    id         bigserial PRIMARY KEY,
    tenant_id  bigint      REFERENCES tenants (id) ON DELETE CASCADE,
    kind       text        NOT NULL,
    subject_id bigint,
    detail     jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX activity_created ON activity (created_at);
CREATE INDEX activity_tenant ON activity (tenant_id, created_at);
