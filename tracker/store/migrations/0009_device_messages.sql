-- Messages go both ways (contract part 2, "Two-way messages"): a device's own `send` is a row too, so one
-- id order and one cursor list a conversation. Only `to_device` rows are delivered, sent and acked.
ALTER TABLE messages ADD COLUMN direction text NOT NULL DEFAULT 'to_device'
    CONSTRAINT messages_direction CHECK (direction IN ('to_device', 'from_device'));
-- The id a device chose for its message: sending it again (a retry after a lost ack) finds the first row.
ALTER TABLE messages ADD COLUMN client_id text;
CREATE UNIQUE INDEX messages_client_id ON messages (device_id, client_id) WHERE client_id IS NOT NULL;
DROP INDEX messages_pending;
CREATE INDEX messages_pending ON messages (device_id, id) WHERE acked_ts IS NULL AND direction = 'to_device';
