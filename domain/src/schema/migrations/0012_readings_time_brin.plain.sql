-- Plain PostgreSQL: a BRIN index on the readings' time, so the rollup
-- refresh reads the hours it recomputes instead of their whole partition
-- (a week of every device, on every refresh round). Readings arrive in
-- time order, so 32-page ranges stay narrow; the index is a few kB per
-- partition and costs writers next to nothing. Panels keep their primary
-- key (device_id, metric, ts): the planner does not prefer a lossy bitmap
-- for a few devices. TimescaleDB's hypertable has its own index on ts.
CREATE INDEX readings_ts_brin_idx ON readings USING brin (ts)
    WITH (pages_per_range = 32, autosummarize = on);
