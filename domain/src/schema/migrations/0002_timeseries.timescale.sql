-- TimescaleDB: hypertables with compression, continuous aggregates.
-- {chunk_days} is substituted from storage.chunk_days at first migration.

CREATE TABLE readings (
    device_id  text NOT NULL,
    metric     text NOT NULL,
    ts         timestamptz NOT NULL,
    value      double precision NOT NULL,
    PRIMARY KEY (device_id, metric, ts)
);
SELECT create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '{chunk_days} days');
ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id, metric',
    timescaledb.compress_orderby = 'ts DESC'
);

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
);
SELECT create_hypertable('events', 'ts', chunk_time_interval => INTERVAL '{chunk_days} days');
CREATE INDEX events_type_ts_idx ON events (event_type, ts);
ALTER TABLE events SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id',
    timescaledb.compress_orderby = 'ts DESC'
);

CREATE MATERIALIZED VIEW readings_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT device_id,
       metric,
       time_bucket(INTERVAL '1 hour', ts) AS bucket,
       count(*)            AS samples,
       avg(value)          AS avg,
       min(value)          AS min,
       max(value)          AS max,
       first(value, ts)    AS first,
       last(value, ts)     AS last
FROM readings
GROUP BY device_id, metric, time_bucket(INTERVAL '1 hour', ts)
WITH NO DATA;

CREATE MATERIALIZED VIEW readings_daily
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT device_id,
       metric,
       time_bucket(INTERVAL '1 day', bucket)  AS bucket,
       sum(samples)::bigint                   AS samples,
       sum(avg * samples) / sum(samples)      AS avg,
       min(min)                               AS min,
       max(max)                               AS max,
       first(first, bucket)                   AS first,
       last(last, bucket)                     AS last
FROM readings_hourly
GROUP BY device_id, metric, time_bucket(INTERVAL '1 day', bucket)
WITH NO DATA;

SELECT add_continuous_aggregate_policy('readings_hourly',
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '15 minutes');
SELECT add_continuous_aggregate_policy('readings_daily',
    start_offset => INTERVAL '7 days', end_offset => INTERVAL '1 day',
    schedule_interval => INTERVAL '1 hour');
