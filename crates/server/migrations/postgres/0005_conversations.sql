-- Conversations with their own sequences (issue 10); see the SQLite migration of the same
-- number for the model. `conv` is `(smaller user id << 32) | larger` for a pair, and
-- `-group_id` for a group; `seq` numbers a conversation's messages 1, 2, 3, ...
ALTER TABLE messages ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
UPDATE messages SET conv = -group_id WHERE group_id IS NOT NULL;
UPDATE messages SET seq = s.seq
FROM (SELECT id, row_number() OVER (PARTITION BY conv ORDER BY id) AS seq FROM messages) AS s
WHERE s.id = messages.id;

-- One row per conversation. A writer locks the rows of the conversations it writes to
-- (and only those) until it commits: only writers to the same conversation wait.
CREATE TABLE conversations (
    id BIGINT PRIMARY KEY,
    user_a BIGINT,
    user_b BIGINT,
    group_id BIGINT,
    last_seq BIGINT NOT NULL,
    last_msg_id BIGINT NOT NULL,
    last_ts BIGINT NOT NULL
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

ALTER TABLE group_members ADD COLUMN joined_seq BIGINT NOT NULL DEFAULT 0;
UPDATE group_members SET joined_seq = COALESCE(
    (SELECT MAX(seq) FROM messages
     WHERE conv = -group_members.group_id AND id <= group_members.joined_after), 0);

CREATE TABLE cursors (
    user_id BIGINT NOT NULL,
    conv BIGINT NOT NULL,
    delivered BIGINT NOT NULL DEFAULT 0,
    read BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, conv)
);
INSERT INTO cursors (user_id, conv, delivered, read)
SELECT user_id, conv, s, s FROM (
    SELECT p.user_id, p.conv,
           COALESCE((SELECT MAX(m.seq) FROM messages m
                     WHERE m.conv = p.conv AND m.id <= a.cursor), 0) AS s
    FROM (SELECT user_a AS user_id, id AS conv FROM conversations WHERE user_a IS NOT NULL
          UNION ALL SELECT user_b, id FROM conversations WHERE user_b IS NOT NULL
          UNION ALL SELECT user_id, -group_id FROM group_members) AS p
    JOIN ack_cursors a ON a.user_id = p.user_id) AS x
WHERE s > 0;
DROP TABLE ack_cursors;

CREATE TABLE client_msg_ids (
    user_id BIGINT NOT NULL,
    cmid TEXT NOT NULL,
    msg_id BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, cmid)
);
CREATE INDEX client_msg_ids_by_time ON client_msg_ids(created_ms);

DROP INDEX messages_by_recipient;
DROP INDEX messages_by_conv;
DROP INDEX messages_by_group;
CREATE UNIQUE INDEX messages_by_conv_seq ON messages(conv, seq);
