-- Each meter register at the start of each local day of its site (the first
-- hourly register at or after local midnight): what daily consumption over
-- long ranges reads — 365 rows per meter for a year instead of 8,760.
-- Maintained with the rollups from the hours writers mark dirty.
CREATE TABLE registers_daily (
    device_id  text NOT NULL,
    metric     text NOT NULL,
    day        date NOT NULL,
    first_at   timestamptz NOT NULL,
    first      double precision NOT NULL,
    PRIMARY KEY (device_id, metric, day)
);

-- Fill it from what the rollups already hold.
INSERT INTO registers_daily (device_id, metric, day, first_at, first)
SELECT h.device_id, h.metric, (h.bucket AT TIME ZONE s.time_zone)::date,
       min(h.bucket), (array_agg(h.first ORDER BY h.bucket))[1]
  FROM readings_hourly h
  JOIN devices d ON d.device_id = h.device_id
  JOIN sites s ON s.site_id = d.site_id
 WHERE h.metric IN ('energy_kwh', 'volume_m3') AND h.first IS NOT NULL
 GROUP BY 1, 2, 3;
