-- Each meter's consumption per hour: its register at the next hour's start
-- minus its register at this hour's start (`readings_hourly.first`), kept
-- only where both hours are known and the register did not fall (reset,
-- replacement). What hourly consumption panels read: a year of a building
-- is a sum per hour over a primary-key range, not a window function over
-- the rollup (which needed a sort of every row in TimescaleDB mode).
-- Maintained with the rollups from the hours writers mark dirty.
CREATE TABLE consumption_hourly (
    device_id  text NOT NULL,
    metric     text NOT NULL,
    bucket     timestamptz NOT NULL,
    used       double precision NOT NULL,
    PRIMARY KEY (device_id, metric, bucket)
);

-- Fill it from what the rollups already hold.
INSERT INTO consumption_hourly (device_id, metric, bucket, used)
SELECT device_id, metric, bucket, next - first
  FROM (SELECT device_id, metric, bucket, first,
               lead(first) OVER w AS next, lead(bucket) OVER w AS next_bucket
          FROM readings_hourly
         WHERE metric IN ('energy_kwh', 'volume_m3') AND first IS NOT NULL
        WINDOW w AS (PARTITION BY device_id, metric ORDER BY bucket)) s
 WHERE next_bucket = bucket + interval '1 hour' AND next >= first;
