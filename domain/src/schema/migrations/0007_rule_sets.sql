-- Alert rule sets put through the API (admins). The newest row is the
-- active set for ingest (immediate rules) and analytics (every rule); with
-- no row, each process uses its `alerts.rules_file` or the shipped rules.
-- Rows are never updated: the table is the history of who changed the
-- rules, when, and to what.

CREATE TABLE rule_sets (
    id          bigserial PRIMARY KEY,
    source      text NOT NULL,              -- the rules file, as TOML
    rules       integer NOT NULL,           -- how many rules it holds
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL,
    -- true: go back to each process's rules file / shipped rules
    reset       boolean NOT NULL DEFAULT false
);

