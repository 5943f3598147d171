-- A rule set without the always-on emergency rules (entrapment, forced
-- door, fire-main pressure) is refused unless an admin waives them
-- explicitly; the waiver is kept with the set, so /health, the metrics and
-- the history say who turned which emergency off, and when.
ALTER TABLE rule_sets
    ADD COLUMN waived_emergencies text[] NOT NULL DEFAULT '{}';
