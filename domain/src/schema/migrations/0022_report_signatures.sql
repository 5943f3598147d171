-- Sign-off of a report version (`estatemon report sign`). A signature
-- belongs to one version of a site's quarter: a regenerated report is the
-- next version and carries none until signed again. Rows are only ever
-- inserted: they are the record of who signed which content, and when.
CREATE TABLE report_signatures (
    id             bigserial PRIMARY KEY,
    site_id        text NOT NULL,
    quarter        text NOT NULL,
    version        integer NOT NULL,
    role           text NOT NULL CHECK (role IN ('preparer', 'reviewer')),
    name           text NOT NULL CHECK (name <> ''),
    qualification  text NOT NULL CHECK (qualification <> ''),
    signed_at      timestamptz NOT NULL,
    recorded_by    text NOT NULL,
    -- SHA-256 of the version's report.json as generated (no signatures).
    content_sha256 bytea NOT NULL,
    UNIQUE (site_id, quarter, version, role)
);
