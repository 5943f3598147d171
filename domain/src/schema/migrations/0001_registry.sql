-- Registry, dead letters and bookkeeping: the same in both storage modes.

CREATE TABLE estatemon_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE sites (
    site_id        text PRIMARY KEY,
    name           text NOT NULL,
    time_zone      text NOT NULL,
    latitude       double precision,
    longitude      double precision,
    floor_area_m2  double precision,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE buildings (
    site_id        text NOT NULL REFERENCES sites ON DELETE CASCADE,
    building_id    text NOT NULL,
    name           text NOT NULL,
    floor_area_m2  double precision,
    PRIMARY KEY (site_id, building_id)
);

-- The equipment ledger. `assigned = false` marks devices that published
-- before anyone registered them; their site comes from the topic.
CREATE TABLE devices (
    device_id          text PRIMARY KEY,
    kind               text NOT NULL DEFAULT 'unknown',
    site_id            text,
    building_id        text,
    area               text,
    purpose            text,
    name               text,
    model              text,
    install_date       date,
    maintenance_cycle  text,
    responsible        text,
    assigned           boolean NOT NULL DEFAULT true,
    first_seen         timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_site_idx ON devices (site_id, building_id, area);

-- Messages that could not be decoded or validated, kept with the reason a
-- person can read. Access credentials are redacted before they land here.
CREATE TABLE dead_letters (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    topic        text NOT NULL,
    payload      bytea NOT NULL,
    reason       text NOT NULL,
    detail       text NOT NULL
);
CREATE INDEX dead_letters_received_idx ON dead_letters (received_at);
CREATE INDEX dead_letters_reason_idx ON dead_letters (reason, received_at);

-- Hours whose rollups must be recomputed; written in the same transaction
-- as the readings, so a crash cannot leave a stale rollup behind.
CREATE TABLE rollup_dirty (
    bucket timestamptz PRIMARY KEY
);
