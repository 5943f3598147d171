-- What became of a dead letter that `estatemon dead-letters reprocess` ran
-- through ingest again (after a mapping, profile or limit was fixed):
-- `resolution` is `stored` (it produced what it should have) or
-- `superseded by <id>` (it was refused again; the new letter, with the
-- reason of today, is the open one). Open letters have no `resolved_at`.
ALTER TABLE dead_letters
    ADD COLUMN resolved_at timestamptz,
    ADD COLUMN resolution text;
CREATE INDEX dead_letters_open_idx ON dead_letters (id) WHERE resolved_at IS NULL;
