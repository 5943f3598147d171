-- The rollup refresh reads and rewrites time windows across every device:
-- hours of consumption_hourly, days of registers_daily. Their primary keys
-- lead with the device, so without these each refresh round read the whole
-- table, which grows with every meter and every hour kept.
CREATE INDEX consumption_hourly_bucket_idx ON consumption_hourly (bucket);
CREATE INDEX registers_daily_day_idx ON registers_daily (day);
