-- When a device said it went offline (an MQTT Last Will, a Zigbee2MQTT
-- availability message) and has not come back: the stale rules page for it
-- at once instead of after their `after`. NULL: online, or never said.
ALTER TABLE devices ADD COLUMN offline_since timestamptz;
