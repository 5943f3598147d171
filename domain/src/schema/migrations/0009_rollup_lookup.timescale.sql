-- Panels ask the rollups for a few devices and one metric over a long
-- range. The plain tables answer from their primary key (device_id,
-- metric, bucket); TimescaleDB's continuous aggregates only index
-- (device_id, bucket) and (metric, bucket) by default, so the same query
-- read every metric of the devices or every device of the metric, and
-- sorted. This index serves it in the order the consumption query wants.
CREATE INDEX readings_hourly_device_metric_bucket_idx
    ON readings_hourly (device_id, metric, bucket);
CREATE INDEX readings_daily_device_metric_bucket_idx
    ON readings_daily (device_id, metric, bucket);
