-- Ids are never reused. Before this, `users` and `chat_groups` used a plain INTEGER
-- PRIMARY KEY, and SQLite gives the next row the largest id + 1: after `delete_group` of
-- the newest group, the next group got its id, and its members read the deleted group's
-- history. AUTOINCREMENT keeps the largest id ever given out in `sqlite_sequence`.
--
-- Run with foreign keys off (see `migrate`): the tables are rebuilt the way SQLite's
-- documentation prescribes (create new, copy, drop old, rename new).

-- The largest ids ever seen, to seed the new sequences, taken before the repair: a
-- deleted group's id may survive only in its messages.
CREATE TEMP TABLE id_floor AS
SELECT MAX(COALESCE((SELECT MAX(id) FROM chat_groups), 0),
           COALESCE((SELECT MAX(group_id) FROM group_members), 0),
           COALESCE((SELECT MAX(group_id) FROM messages), 0)) AS groups_floor,
       COALESCE((SELECT MAX(id) FROM users), 0) AS users_floor;

-- Repair first: what a deleted group left behind shows nowhere again.
-- 1. Messages of groups that no longer exist.
DELETE FROM messages
WHERE group_id IS NOT NULL AND group_id NOT IN (SELECT id FROM chat_groups);
-- 2. A group whose id was reused: messages from before its creator's membership began
--    (joined_after is the last message id when the group was created) were the deleted
--    group's.
DELETE FROM messages
WHERE group_id IS NOT NULL
  AND id <= (SELECT m.joined_after FROM group_members m
             WHERE m.group_id = messages.group_id AND m.role = 'creator');

CREATE TABLE users_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    admin INTEGER NOT NULL DEFAULT 0,
    muted_until INTEGER NOT NULL DEFAULT 0
);
INSERT INTO users_new (id, name, password_hash, created_ms, admin, muted_until)
SELECT id, name, password_hash, created_ms, admin, muted_until FROM users;
DROP TABLE users;
ALTER TABLE users_new RENAME TO users;

CREATE TABLE chat_groups_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    creator INTEGER NOT NULL REFERENCES users(id),
    created_ms INTEGER NOT NULL
);
INSERT INTO chat_groups_new (id, name, description, creator, created_ms)
SELECT id, name, description, creator, created_ms FROM chat_groups;
DROP TABLE chat_groups;
ALTER TABLE chat_groups_new RENAME TO chat_groups;

DELETE FROM sqlite_sequence WHERE name IN ('users', 'chat_groups', 'users_new', 'chat_groups_new');
INSERT INTO sqlite_sequence (name, seq) SELECT 'users', users_floor FROM id_floor;
INSERT INTO sqlite_sequence (name, seq) SELECT 'chat_groups', groups_floor FROM id_floor;
DROP TABLE id_floor;
