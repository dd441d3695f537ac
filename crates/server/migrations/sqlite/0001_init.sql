-- Users, their session tokens, friendships, groups and messages.
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);

-- Every message with an id up to `cursor` is delivered for good to the user. A narrow
-- table of its own: acks are frequent, and a commit writes every page it touched.
CREATE TABLE ack_cursors (
    user_id INTEGER PRIMARY KEY REFERENCES users(id),
    cursor INTEGER NOT NULL
);

CREATE TABLE tokens (
    hash BLOB PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX tokens_by_user ON tokens(user_id);

-- Friendship is mutual: one row each way.
CREATE TABLE friends (
    user_id INTEGER NOT NULL REFERENCES users(id),
    friend_id INTEGER NOT NULL REFERENCES users(id),
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, friend_id)
) WITHOUT ROWID;

CREATE TABLE chat_groups (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    creator INTEGER NOT NULL REFERENCES users(id),
    created_ms INTEGER NOT NULL
);

CREATE TABLE group_members (
    group_id INTEGER NOT NULL REFERENCES chat_groups(id),
    user_id INTEGER NOT NULL REFERENCES users(id),
    role TEXT NOT NULL,
    -- The last message id when the user joined: only later messages are pending for it.
    joined_after INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;
CREATE INDEX group_members_by_user ON group_members(user_id, group_id);

-- Messages are kept after delivery (history). `conv` keys a one-to-one conversation:
-- (smaller user id << 32) | larger user id.
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    from_user INTEGER NOT NULL,
    to_user INTEGER,
    group_id INTEGER,
    conv INTEGER,
    text TEXT NOT NULL
);
CREATE INDEX messages_by_recipient ON messages(to_user, id) WHERE to_user IS NOT NULL;
CREATE INDEX messages_by_conv ON messages(conv, id) WHERE conv IS NOT NULL;
CREATE INDEX messages_by_group ON messages(group_id, id) WHERE group_id IS NOT NULL;
