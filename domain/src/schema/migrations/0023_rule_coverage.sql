-- The spans of time the alert rules were evaluated over: live (each
-- `estatemon analytics` cycle extends its span) or replayed (`estatemon
-- analytics replay`, extended chunk by chunk). A report says which part of
-- its quarter they cover, and never presents a partly evaluated quarter's
-- alerts as complete.
CREATE TABLE rule_coverage (
    id          bigserial PRIMARY KEY,
    mode        text NOT NULL CHECK (mode IN ('live', 'replay')),
    from_ts     timestamptz NOT NULL,
    to_ts       timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CHECK (to_ts >= from_ts)
);
CREATE INDEX rule_coverage_span_idx ON rule_coverage (mode, to_ts);
