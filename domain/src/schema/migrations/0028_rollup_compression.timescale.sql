-- TimescaleDB: the hourly rollups compressed like the readings. Once the
-- readings were compressed (7 bytes a reading), the uncompressed rollups
-- were most of the database: `readings_hourly` 79 bytes a reading and
-- `consumption_hourly` 47 (BENCHMARKS.md, the portfolio). Both are kept per
-- device and metric and read that way by the panels, so that is how they
-- are segmented. The compression policies are set with the readings' (at
-- every start, from `storage.compress_after_days`).
ALTER MATERIALIZED VIEW readings_hourly SET (
    timescaledb.compress = true,
    timescaledb.compress_segmentby = 'device_id, metric',
    timescaledb.compress_orderby = 'bucket DESC'
);
ALTER MATERIALIZED VIEW readings_daily SET (
    timescaledb.compress = true,
    timescaledb.compress_segmentby = 'device_id, metric',
    timescaledb.compress_orderby = 'bucket DESC'
);

-- Chunks ten times the readings' (an hour holds four 15-minute readings,
-- a fraction of a reading's row), as TimescaleDB sizes a continuous
-- aggregate's.
SELECT create_hypertable('consumption_hourly', 'bucket',
    chunk_time_interval => INTERVAL '{chunk_days} days' * 10, migrate_data => true);
ALTER TABLE consumption_hourly SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id, metric',
    timescaledb.compress_orderby = 'bucket DESC'
);
