-- Alerts: their lifecycle, silences and the delivery outbox. The same in
-- both storage modes (small tables, no partitioning).

-- One row per fault. `fingerprint` (rule + subject) identifies the fault;
-- the partial unique index lets at most one alert per fingerprint be open,
-- so two evaluators (or the ingest fast path and the analytics job) racing
-- on the same fault create one alert, and so one page.
CREATE TABLE alerts (
    id                 bigserial PRIMARY KEY,
    rule               text NOT NULL,
    subject            text NOT NULL,
    fingerprint        text NOT NULL,
    severity           text NOT NULL CHECK (severity IN ('emergency', 'ordinary', 'routine')),
    summary            text NOT NULL,
    labels             jsonb NOT NULL,
    site_id            text,
    device_id          text,
    value              double precision,
    state              text NOT NULL DEFAULT 'firing'
                       CHECK (state IN ('firing', 'acknowledged', 'resolved')),
    source             text NOT NULL,
    -- data time: when the fault began and, once over, when it cleared
    started_at         timestamptz NOT NULL,
    resolved_at        timestamptz,
    -- latest evidence (the last matching event, the last breaching sample)
    last_seen_at       timestamptz NOT NULL,
    -- wall-clock lifecycle, for time-to-acknowledge/resolve in reports
    fired_at           timestamptz NOT NULL DEFAULT now(),
    response_deadline  timestamptz NOT NULL,
    acknowledged_at    timestamptz,
    acknowledged_by    text,
    escalated_at       timestamptz,
    closed_at          timestamptz,
    silenced_by        bigint
);
CREATE UNIQUE INDEX alerts_one_open_per_fault ON alerts (fingerprint) WHERE state <> 'resolved';
CREATE INDEX alerts_started_idx ON alerts (started_at);
CREATE INDEX alerts_open_idx ON alerts (rule) WHERE state <> 'resolved';

-- Maintenance windows: alerts whose labels match every matcher while the
-- silence is active are recorded but do not page.
CREATE TABLE silences (
    id          bigserial PRIMARY KEY,
    matchers    jsonb NOT NULL,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    created_by  text NOT NULL,
    comment     text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);
CREATE INDEX silences_active_idx ON silences (ends_at);

-- The outbox: one row per transition and receiver, written in the same
-- transaction as the transition, delivered (with retries) by whichever
-- notifier claims it first (FOR UPDATE SKIP LOCKED).
CREATE TABLE alert_notifications (
    id               bigserial PRIMARY KEY,
    alert_id         bigint NOT NULL REFERENCES alerts ON DELETE CASCADE,
    kind             text NOT NULL CHECK (kind IN ('firing', 'escalated', 'resolved')),
    receiver         text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    last_error       text
);
CREATE INDEX alert_notifications_due_idx ON alert_notifications (next_attempt_at)
    WHERE delivered_at IS NULL;
