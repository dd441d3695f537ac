-- Message ids without a cluster-wide lock (issue 10). Before, every write batch took one
-- advisory lock and moved cluster_log.last_msg_id, so ids followed commit order across
-- the cluster. Order now lives in each conversation (seq, under the conversation's row
-- lock); ids only need to be unique and never reused. Each connection takes 1,000 at a
-- time from the sequence (CACHE): a node touches the shared counter once per 1,000 ids.
CREATE SEQUENCE message_ids CACHE 1000;
SELECT setval('message_ids',
              GREATEST((SELECT last_msg_id FROM cluster_log WHERE id = 1),
                       (SELECT COALESCE(MAX(id), 0) FROM messages)) + 1,
              false);
