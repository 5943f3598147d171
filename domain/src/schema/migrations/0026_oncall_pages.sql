-- On-call: the pages of each alert's escalation ladder, what happened to
-- each (the incident's timeline), the single-use links in them, and the
-- key that signs those links (made once, shared by every process).

-- One row per step of a ladder that came due (or a fall-through to the
-- fallback). The unique index makes planning idempotent: any number of
-- analytics replicas may plan, and each step of each alert pages once.
CREATE TABLE oncall_pages (
    id               bigserial PRIMARY KEY,
    alert_id         bigint NOT NULL REFERENCES alerts ON DELETE CASCADE,
    policy           text,
    round            integer NOT NULL,
    step             integer NOT NULL,
    due_at           timestamptz NOT NULL,
    person           text NOT NULL,
    -- as the roster named them then, and whether the page was due out of
    -- their hours (night, weekend, holiday): the load reports keep the
    -- truth of the time whatever the roster becomes
    person_name      text NOT NULL DEFAULT '',
    out_of_hours     boolean NOT NULL DEFAULT false,
    reason           text NOT NULL,
    flagged          boolean NOT NULL DEFAULT false,
    -- the page whose every contact method failed, for a fall-through
    fallthrough_of   bigint REFERENCES oncall_pages ON DELETE CASCADE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- delivery: the contact method being tried (index into the person's
    -- methods), its tries so far, and the outcome
    method           integer NOT NULL DEFAULT 0,
    tries            integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    delivered_via    text,
    failed_at        timestamptz,
    cancelled_at     timestamptz,
    last_error       text
);
CREATE UNIQUE INDEX oncall_pages_one_per_step
    ON oncall_pages (alert_id, step, due_at) WHERE fallthrough_of IS NULL;
CREATE UNIQUE INDEX oncall_pages_one_fallthrough
    ON oncall_pages (fallthrough_of) WHERE fallthrough_of IS NOT NULL;
CREATE INDEX oncall_pages_due_idx ON oncall_pages (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL AND cancelled_at IS NULL;

-- The incident's timeline beyond the alert row: each try of each page
-- (who, step, channel, delivered or failed and why), hand-overs, and each
-- acknowledgement, resolution or snooze from a link (or a refused link).
-- `person` is the roster id, never a contact detail.
CREATE TABLE oncall_events (
    id        bigserial PRIMARY KEY,
    alert_id  bigint NOT NULL REFERENCES alerts ON DELETE CASCADE,
    page_id   bigint REFERENCES oncall_pages ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT now(),
    kind      text NOT NULL,
    person    text,
    channel   text,
    detail    text NOT NULL DEFAULT ''
);
CREATE INDEX oncall_events_alert_idx ON oncall_events (alert_id, at);

-- A link works once: its use is recorded here first.
CREATE TABLE oncall_link_uses (
    page_id   bigint NOT NULL REFERENCES oncall_pages ON DELETE CASCADE,
    action    text NOT NULL,
    used_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (page_id, action)
);

-- The key that signs links: 32 random bytes, made by whichever process
-- needs it first.
CREATE TABLE oncall_keys (
    id   integer PRIMARY KEY CHECK (id = 1),
    key  bytea NOT NULL
);

ALTER TABLE alerts ADD COLUMN snoozed_until timestamptz;
-- Alerts open when on-call arrives start their ladder now, not from a
-- firing long past (which would page every step at once).
UPDATE alerts SET snoozed_until = now() WHERE state <> 'resolved';
ALTER TABLE alerts ADD COLUMN resolved_by text;

-- Heartbeat monitors (`[[oncall.heartbeat]]`, and the analytics job's own):
-- a system silent past its interval is an alert.
CREATE TABLE heartbeats (
    name        text PRIMARY KEY,
    interval_s  bigint NOT NULL CHECK (interval_s > 0),
    severity    text NOT NULL DEFAULT 'ordinary',
    site        text,
    summary     text NOT NULL,
    last_at     timestamptz NOT NULL DEFAULT now()
);

-- Rosters an admin stored through the API (`PUT /api/v1/oncall/roster`):
-- the newest row is the roster every process uses; none: the file
-- `oncall.roster` names.
CREATE TABLE oncall_rosters (
    id          bigserial PRIMARY KEY,
    text        text NOT NULL,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
