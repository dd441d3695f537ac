-- Users, their session tokens, friendships, groups and messages: the same schema as the
-- SQLite store's 0001_init.sql, with BIGINT ids and one more table, cluster_log.
CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

-- Every message with an id up to `cursor` is delivered for good to the user. A narrow
-- table of its own: acks are frequent and written in bulk.
CREATE TABLE ack_cursors (
    user_id BIGINT PRIMARY KEY REFERENCES users(id),
    cursor BIGINT NOT NULL
);

-- Tokens are stored by their SHA-256 hash, never as given to the client.
CREATE TABLE tokens (
    hash BYTEA PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id),
    expires_ms BIGINT NOT NULL
);
CREATE INDEX tokens_by_user ON tokens(user_id);

-- Friendship is mutual: one row each way.
CREATE TABLE friends (
    user_id BIGINT NOT NULL REFERENCES users(id),
    friend_id BIGINT NOT NULL REFERENCES users(id),
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, friend_id)
);

CREATE TABLE chat_groups (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    creator BIGINT NOT NULL REFERENCES users(id),
    created_ms BIGINT NOT NULL
);

CREATE TABLE group_members (
    group_id BIGINT NOT NULL REFERENCES chat_groups(id),
    user_id BIGINT NOT NULL REFERENCES users(id),
    role TEXT NOT NULL,
    -- The last message id when the user joined: only later messages are pending for it.
    joined_after BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_by_user ON group_members(user_id, group_id);

-- Messages are kept after delivery (history). `conv` keys a one-to-one conversation:
-- (smaller user id << 32) | larger user id. Ids are not a sequence: the writer that
-- commits assigns them from cluster_log, so they are contiguous in commit order. `text`
-- is the UTF-8 bytes of the text: a JSON string may hold NUL, which TEXT cannot.
CREATE TABLE messages (
    id BIGINT PRIMARY KEY,
    ts BIGINT NOT NULL,
    from_user BIGINT NOT NULL,
    to_user BIGINT,
    group_id BIGINT,
    conv BIGINT,
    text BYTEA NOT NULL
);
CREATE INDEX messages_by_recipient ON messages(to_user, id) WHERE to_user IS NOT NULL;
CREATE INDEX messages_by_conv ON messages(conv, id) WHERE conv IS NOT NULL;
CREATE INDEX messages_by_group ON messages(group_id, id) WHERE group_id IS NOT NULL;

-- The id of the last message committed by any node of the cluster. A writer reads and
-- moves it under a transaction-scoped advisory lock, so ids follow commit order.
CREATE TABLE cluster_log (
    id INT PRIMARY KEY CHECK (id = 1),
    last_msg_id BIGINT NOT NULL
);
INSERT INTO cluster_log (id, last_msg_id) VALUES (1, 0);
