-- The id a device reports under when it is not its ledger id (a Shelly
-- channel, a Sparkplug `group/node/device`): ingest stores what arrives
-- under it as the device's own.
ALTER TABLE devices ADD COLUMN source_id text UNIQUE;
