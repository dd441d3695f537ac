-- Conversations with their own sequences (issue 10). Every message belongs to a
-- conversation, `conv`: a pair of users, `(smaller id << 32) | larger id` (as before), or
-- a group, `-group_id`. `seq` numbers the messages of one conversation 1, 2, 3, ...
-- without gaps, in commit order.
ALTER TABLE messages ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET conv = -group_id WHERE group_id IS NOT NULL;
UPDATE messages SET seq = s.seq
FROM (SELECT id, row_number() OVER (PARTITION BY conv ORDER BY id) AS seq FROM messages) AS s
WHERE s.id = messages.id;

-- One row per conversation: its members (a pair, or a group), its last seq, and the id
-- and time of its last activity (its last message; for a group without one, its
-- creation), which orders the conversation list.
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY,
    user_a INTEGER,
    user_b INTEGER,
    group_id INTEGER,
    last_seq INTEGER NOT NULL,
    last_msg_id INTEGER NOT NULL,
    last_ts INTEGER NOT NULL
);
INSERT INTO conversations (id, user_a, user_b, group_id, last_seq, last_msg_id, last_ts)
SELECT conv,
       CASE WHEN conv > 0 THEN conv >> 32 END,
       CASE WHEN conv > 0 THEN conv & 4294967295 END,
       CASE WHEN conv < 0 THEN -conv END,
       MAX(seq), MAX(id), MAX(ts)
FROM messages GROUP BY conv;
INSERT INTO conversations (id, user_a, user_b, group_id, last_seq, last_msg_id, last_ts)
SELECT -g.id, NULL, NULL, g.id, 0,
       COALESCE((SELECT joined_after FROM group_members m
                 WHERE m.group_id = g.id AND m.role = 'creator'), 0),
       g.created_ms
FROM chat_groups g WHERE -g.id NOT IN (SELECT id FROM conversations);
CREATE INDEX conversations_by_a ON conversations(user_a, last_msg_id) WHERE user_a IS NOT NULL;
CREATE INDEX conversations_by_b ON conversations(user_b, last_msg_id) WHERE user_b IS NOT NULL;

-- A member's place in a group when it joined: only later messages are pending for it.
ALTER TABLE group_members ADD COLUMN joined_seq INTEGER NOT NULL DEFAULT 0;
UPDATE group_members SET joined_seq = COALESCE(
    (SELECT MAX(seq) FROM messages
     WHERE conv = -group_members.group_id AND id <= group_members.joined_after), 0);

-- Each member's two cursors in a conversation: delivered (moved by acks) and read
-- (moved by `read`). The old ack cursor (one per user, a message id) becomes, in each of
-- the user's conversations, the last seq at or below it; what was delivered counts as read.
CREATE TABLE cursors (
    user_id INTEGER NOT NULL,
    conv INTEGER NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    read INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, conv)
) WITHOUT ROWID;
INSERT INTO cursors (user_id, conv, delivered, read)
SELECT user_id, conv, s, s FROM (
    SELECT p.user_id, p.conv,
           COALESCE((SELECT MAX(m.seq) FROM messages m
                     WHERE m.conv = p.conv AND m.id <= a.cursor), 0) AS s
    FROM (SELECT user_a AS user_id, id AS conv FROM conversations WHERE user_a IS NOT NULL
          UNION ALL SELECT user_b, id FROM conversations WHERE user_b IS NOT NULL
          UNION ALL SELECT user_id, -group_id FROM group_members) AS p
    JOIN ack_cursors a ON a.user_id = p.user_id)
WHERE s > 0;
DROP TABLE ack_cursors;

-- A client's own ids for its sends, for 24 hours: a resend with the same one gets the
-- first message back instead of a second message.
CREATE TABLE client_msg_ids (
    user_id INTEGER NOT NULL,
    cmid TEXT NOT NULL,
    msg_id INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, cmid)
) WITHOUT ROWID;
CREATE INDEX client_msg_ids_by_time ON client_msg_ids(created_ms);

-- The message path needs one index: a conversation's messages by seq (pending, history,
-- sync). The per-recipient and per-group indexes only cost every insert.
DROP INDEX messages_by_recipient;
DROP INDEX messages_by_conv;
DROP INDEX messages_by_group;
CREATE UNIQUE INDEX messages_by_conv_seq ON messages(conv, seq);
