-- Hourly use is now derived from the raw readings as reports derive it: a
-- rollover, reset or replaced meter inside an hour counts the use before
-- and after it (the hour was dropped), and an outage's use is spread over
-- its hours, marked estimated (it was in the day and in no hour). The days
-- (`registers_daily.used`) are the sums of their hours. Every hour of a
-- register is marked dirty so the rollup task recomputes them all.
ALTER TABLE consumption_hourly ADD COLUMN estimated boolean NOT NULL DEFAULT false;
INSERT INTO rollup_dirty (bucket)
SELECT DISTINCT bucket FROM consumption_hourly
ON CONFLICT DO NOTHING;
