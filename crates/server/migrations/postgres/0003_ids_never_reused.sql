-- Ids are never reused: users and groups take theirs from sequences (BIGSERIAL), which
-- never hand out a value twice, and message ids from cluster_log, which only grows.
-- Repair: what a deleted group left behind (its messages) shows nowhere again.
DELETE FROM messages
WHERE group_id IS NOT NULL AND group_id NOT IN (SELECT id FROM chat_groups);
