-- What became of a dead letter that `estatemon dead-letters reprocess` ran
-- through ingest again (after a mapping, profile or limit was fixed):
-- `resolution` is `reprocessed: refused again as <id>` (refused again for
-- the same reason; the new letter, with today's detail, is the open one)
-- or `reprocessed`. Open letters have no `resolved_at`.
ALTER TABLE dead_letters
    ADD COLUMN resolved_at timestamptz,
    ADD COLUMN resolution text;
CREATE INDEX dead_letters_open_idx ON dead_letters (id) WHERE resolved_at IS NULL;
