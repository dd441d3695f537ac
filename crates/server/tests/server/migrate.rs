//! A store made by the previous version (one global id sequence, one ack cursor per
//! user) is migrated at first start with its history, and nothing pending is lost.

use chat_proto::types::ConvWith;
use chat_server::store::{direct_conv, group_conv, Conversation, Store};
use chat_server::Durability;

use crate::util::StoreKind;

/// The schema of the previous version, with: alice (1), bob (2), carol (3); group 1 by
/// alice, which bob joined after message 2; messages 1 and 2 alice to bob, 3 in the
/// group, 4 carol to bob, 5 in the group; bob acked up to 3. And `ALICE` (4), a name
/// the previous version let through beside `alice`.
const OLD_DATA: &str = "
    INSERT INTO users (id, name, password_hash, created_ms) VALUES
        (1, 'alice', 'h', 0), (2, 'bob', 'h', 0), (3, 'carol', 'h', 0), (4, 'ALICE', 'h', 0);
    INSERT INTO chat_groups (id, name, description, creator, created_ms) VALUES (1, 'g', '', 1, 0);
    INSERT INTO group_members (group_id, user_id, role, joined_after) VALUES
        (1, 1, 'creator', 0), (1, 2, 'member', 2);
    INSERT INTO messages (id, ts, from_user, to_user, group_id, conv, text) VALUES
        (1, 1, 1, 2, NULL, 4294967298, 'd1'),
        (2, 2, 1, 2, NULL, 4294967298, 'd2'),
        (3, 3, 1, NULL, 1, NULL, 'g1'),
        (4, 4, 3, 2, NULL, 8589934595, 'c1'),
        (5, 5, 1, NULL, 1, NULL, 'g2');
    INSERT INTO ack_cursors (user_id, cursor) VALUES (2, 3);
";

async fn old_store() -> (Box<dyn Store>, Box<dyn std::any::Any>) {
    match crate::STORE {
        StoreKind::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("old.db");
            {
                let conn = rusqlite::Connection::open(&path).unwrap();
                conn.execute_batch(include_str!("../../migrations/sqlite/0001_init.sql"))
                    .unwrap();
                conn.execute_batch(include_str!(
                    "../../migrations/sqlite/0002_admin_expiry.sql"
                ))
                .unwrap();
                conn.execute_batch(include_str!(
                    "../../migrations/sqlite/0003_ids_never_reused.sql"
                ))
                .unwrap();
                conn.execute_batch(
                    "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL);
                     INSERT INTO schema_migrations VALUES (1, 0), (2, 0), (3, 0);",
                )
                .unwrap();
                conn.execute_batch(OLD_DATA).unwrap();
                conn.execute_batch("UPDATE log_position SET last_msg_id = 5")
                    .unwrap();
            }
            let (store, _log) =
                chat_server::store::sqlite::SqliteStore::open(&path, Durability::Normal).unwrap();
            (Box::new(store), Box::new(dir))
        }
        StoreKind::Postgres => {
            let schema = crate::util::PgSchema::create().await;
            let sql = format!(
                "SET search_path TO {}; {} {} {} \
                 CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL); \
                 INSERT INTO schema_migrations VALUES (1, 0), (2, 0), (3, 0); {} \
                 UPDATE cluster_log SET last_msg_id = 5; \
                 SELECT setval('users_id_seq', 4); SELECT setval('chat_groups_id_seq', 1);",
                schema.name,
                include_str!("../../migrations/postgres/0001_init.sql"),
                include_str!("../../migrations/postgres/0002_admin_expiry.sql"),
                include_str!("../../migrations/postgres/0003_ids_never_reused.sql"),
                OLD_DATA.replace("'d1'", "'d1'::bytea").replace("'d2'", "'d2'::bytea")
                    .replace("'g1'", "'g1'::bytea").replace("'c1'", "'c1'::bytea")
                    .replace("'g2'", "'g2'::bytea"),
            );
            crate::util::pg_exec(&schema.base, &sql).await.unwrap();
            let (store, _log) = chat_server::store::postgres::PgStore::open(&schema.url)
                .await
                .unwrap();
            (Box::new(store), Box::new(schema))
        }
    }
}

fn texts(msgs: &[chat_proto::types::Msg]) -> Vec<&str> {
    msgs.iter().map(|m| m.text.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_the_previous_version_keeps_its_history_and_pending_messages() {
    let (store, _keep) = old_store().await;
    let (alice, bob) = (1, 2);

    // What bob had not acked is still pending, with its conversation and seq.
    let pending = store
        .pending(bob, &Default::default(), 0, 100)
        .await
        .unwrap();
    assert_eq!(texts(&pending), vec!["c1", "g2"]);
    assert_eq!(pending[0].conv, direct_conv(3, bob));
    assert_eq!(pending[0].seq, 1);
    assert_eq!(pending[1].conv, group_conv(1));
    assert_eq!(pending[1].seq, 2);

    // History is whole, numbered per conversation.
    let direct = store
        .history(bob, Conversation::With(alice), None, 50)
        .await
        .unwrap();
    assert_eq!(texts(&direct), vec!["d1", "d2"]);
    assert_eq!(direct.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2]);
    let group = store
        .history(bob, Conversation::Group(1), None, 50)
        .await
        .unwrap();
    assert_eq!(group.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2]);

    // What was delivered counts as read; the rest is unread.
    let list = store.conversations(bob, None, 10).await.unwrap();
    let unread = |pred: &dyn Fn(&ConvWith) -> bool| {
        list.iter()
            .find(|(_, c)| pred(&c.with))
            .map(|(_, c)| c.unread)
            .unwrap()
    };
    assert_eq!(
        unread(&|w| matches!(w, ConvWith::Direct { peer } if peer.id == alice)),
        0
    );
    assert_eq!(
        unread(&|w| matches!(w, ConvWith::Direct { peer } if peer.id == 3)),
        1
    );
    assert_eq!(unread(&|w| matches!(w, ConvWith::Group { .. })), 1);

    // New messages go on from there; ids are not reused.
    let alice_user = store.user(alice).await.unwrap().unwrap();
    let next = store.send(&alice_user, bob, "d3", None).await.unwrap();
    assert_eq!(next.seq, 3);
    assert!(next.id > 5, "{}", next.id);
    let g = store.group_send(&alice_user, 1, "g3", None).await.unwrap();
    assert_eq!(g.seq, 3);

    // Names are unique by their key now: the name `alice` is the first alice's; the
    // second keeps its account (by id) and its name as registered; nobody can take a
    // third look-alike.
    let by_name = store.credentials_by_name("Alice").await.unwrap().unwrap();
    assert_eq!(by_name.user.id, alice);
    let second = store.credentials_by_id(4).await.unwrap().unwrap();
    assert_eq!(second.user.name, "ALICE");
    let taken = store.create_user("aLiCe", "h").await;
    assert!(
        matches!(taken, Err(chat_server::store::StoreError::Conflict(_))),
        "{taken:?}"
    );
    store.close().await;
}
