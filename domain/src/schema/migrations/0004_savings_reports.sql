-- Retrofits (measurement and verification of savings) and the quarterly
-- reports. The same in both storage modes (small tables).

-- A retrofit as the owners declared it: what it covers, when it happened,
-- its baseline and reporting periods and its target. `spec` is the
-- registry's `[[retrofit]]` table (domain::retrofit::Retrofit) as JSON.
CREATE TABLE retrofits (
    site_id      text NOT NULL REFERENCES sites ON DELETE CASCADE,
    retrofit_id  text NOT NULL,
    spec         jsonb NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, retrofit_id)
);

-- One row per generated quarterly report; regenerating a quarter replaces
-- its files (the newest generation wins) and keeps the row's id.
CREATE TABLE reports (
    id            bigserial PRIMARY KEY,
    site_id       text NOT NULL,
    quarter       text NOT NULL,            -- 2026Q1
    period_start  timestamptz NOT NULL,     -- site-local quarter start
    period_end    timestamptz NOT NULL,
    generated_at  timestamptz NOT NULL DEFAULT now(),
    generated_by  text NOT NULL,            -- 'schedule' or 'cli'
    summary       jsonb NOT NULL,
    UNIQUE (site_id, quarter)
);

CREATE TABLE report_files (
    report_id     bigint NOT NULL REFERENCES reports ON DELETE CASCADE,
    name          text NOT NULL,            -- report.html, report.pdf, totals.csv …
    content_type  text NOT NULL,
    body          bytea NOT NULL,
    PRIMARY KEY (report_id, name)
);
