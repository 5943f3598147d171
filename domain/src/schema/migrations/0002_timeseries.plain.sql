-- Plain PostgreSQL: native range partitioning on ts, partitions created by
-- estatemon ahead of the data (see schema::partitions).

CREATE TABLE readings (
    device_id  text NOT NULL,
    metric     text NOT NULL,
    ts         timestamptz NOT NULL,
    value      double precision NOT NULL,
    PRIMARY KEY (device_id, metric, ts)
) PARTITION BY RANGE (ts);

CREATE TABLE events (
    device_id           text NOT NULL,
    ts                  timestamptz NOT NULL,
    event_type          text NOT NULL,
    discriminator       text NOT NULL DEFAULT '',
    result              text,
    method              text,
    credential          text,
    credential_expired  boolean,
    direction           text,
    code                text,
    state               text,
    duration_s          double precision,
    PRIMARY KEY (device_id, ts, event_type, discriminator)
) PARTITION BY RANGE (ts);
CREATE INDEX events_type_ts_idx ON events (event_type, ts);

-- Rollups, refreshed from rollup_dirty by the maintenance task. Same
-- columns as the TimescaleDB continuous aggregates, so queries do not care.
CREATE TABLE readings_hourly (
    device_id  text NOT NULL,
    metric     text NOT NULL,
    bucket     timestamptz NOT NULL,
    samples    bigint NOT NULL,
    avg        double precision,
    min        double precision,
    max        double precision,
    first      double precision,
    last       double precision,
    PRIMARY KEY (device_id, metric, bucket)
);

CREATE TABLE readings_daily (LIKE readings_hourly INCLUDING ALL);
