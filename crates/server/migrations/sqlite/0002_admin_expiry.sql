-- Administration and expiry: who is an admin, who is muted until when, an index to purge
-- old messages by time, and the last message id given out (a membership change takes an
-- id with no message under it, so MAX(messages.id) is not enough).
ALTER TABLE users ADD COLUMN admin INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN muted_until INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_by_ts ON messages(ts);
CREATE TABLE log_position (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_msg_id INTEGER NOT NULL
);
INSERT INTO log_position (id, last_msg_id) SELECT 1, COALESCE(MAX(id), 0) FROM messages;
