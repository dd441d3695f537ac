-- Administration and expiry: who is an admin, who is muted until when, and an index to
-- purge old messages by time.
ALTER TABLE users ADD COLUMN admin BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN muted_until BIGINT NOT NULL DEFAULT 0;
CREATE INDEX messages_by_ts ON messages (ts);
