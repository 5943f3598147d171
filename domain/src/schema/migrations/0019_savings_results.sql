-- Each site's measured savings, computed by `estatemon analytics` once its
-- local day has closed (and on demand by the API when missing), so that a
-- dashboard reads them instead of fitting every model on each refresh.
CREATE TABLE savings_results (
    site_id        text PRIMARY KEY REFERENCES sites ON DELETE CASCADE,
    -- The reporting periods end at the site's local midnight starting this day.
    measured_until date NOT NULL,
    computed_at    timestamptz NOT NULL,
    results        jsonb NOT NULL
);
