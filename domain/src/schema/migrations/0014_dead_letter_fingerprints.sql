-- A dead letter's message identity (topic, payload, reason, MQTT packet
-- id), so that a batch redelivered after a crash does not store its dead
-- letters twice. NULL for letters with no redelivery identity (QoS 0).
ALTER TABLE dead_letters ADD COLUMN fingerprint bytea;
CREATE INDEX dead_letters_fingerprint_idx ON dead_letters (fingerprint, received_at)
    WHERE fingerprint IS NOT NULL;
