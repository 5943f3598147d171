-- Plain mode: the refresh of the daily rollup, the daily registers and the
-- hourly consumption reads readings_hourly by hour (every device), which
-- its primary key (device_id, metric, bucket) cannot serve. (TimescaleDB's
-- continuous aggregate has its own (metric, bucket) index.)
CREATE INDEX readings_hourly_bucket_idx ON readings_hourly (bucket);
