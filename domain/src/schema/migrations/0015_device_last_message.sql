-- When ingest last received a message from each device (written at most
-- every 30 s per device), whatever time its data carries. The stale rules
-- read it when they evaluate live: a meter catching up on hours of
-- buffered history is sending, not offline.
ALTER TABLE devices ADD COLUMN last_message_at timestamptz;
