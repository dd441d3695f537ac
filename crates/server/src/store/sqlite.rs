//! The embedded store: SQLite in one file, in WAL mode.
//!
//! Writes go to one writer thread through a bounded queue. The thread takes whatever is
//! queued (up to [`MAX_BATCH`] writes), runs it all in one transaction and commits once:
//! group commit, so a busy server pays one fsync per batch, not per message. Only after
//! the commit does each caller get its answer and the [`Commit`] log its entries, in
//! commit order. The writer assigns message ids itself (one more than the last), so ids
//! increase in commit order.
//!
//! Reads run on a few reader threads, each with its own read-only connection; WAL lets
//! them proceed while the writer writes. A reader takes every read queued (up to
//! [`READ_BATCH`]) and runs them in one read transaction: under a burst of logins that
//! pays the locking and the thread wake-up once per batch instead of once per read.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chat_proto::types::{ConvPos, ConvSummary, Invite, Msg, Role, User};
use chat_proto::{ConvId, GroupId, MsgId, Seq, UserId};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use super::writes::{fail, finisher, AckMap, Finisher, PendingAcks, Reply, Write};
use super::{
    direct_conv, group_conv, Befriended, Commit, CommitBatch, CommitLog, Conversation, Credentials,
    GroupRow, GroupSettings, GroupWithMembers, GroupsPage, ReadMark, Snapshot, Store, StoreError,
    StoreResult,
};

mod consent;
mod conv;
mod perms;

use crate::config::Durability;
use conv::ConvTouch;

/// The most writes one transaction takes.
const MAX_BATCH: usize = 4096;
/// How many writes may wait for the writer before callers wait too.
const WRITE_QUEUE: usize = 16 * 1024;
/// How many reader threads (and read connections) there are.
const READERS: usize = 4;
/// The most reads one reader runs in one read transaction.
const READ_BATCH: usize = 64;

/// The versioned schema, applied in order on start.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (
        2,
        include_str!("../../migrations/sqlite/0002_admin_expiry.sql"),
    ),
    (
        3,
        include_str!("../../migrations/sqlite/0003_ids_never_reused.sql"),
    ),
    (
        5,
        include_str!("../../migrations/sqlite/0005_conversations.sql"),
    ),
    (8, include_str!("../../migrations/sqlite/0008_consent.sql")),
    (
        9,
        include_str!("../../migrations/sqlite/0009_name_keys.sql"),
    ),
];

/// A history page ends before message `?2`: before its seq in conversation `?1` (ids do not
/// follow seqs across a cluster's nodes); for an id not in the conversation, before the
/// conversation's messages with smaller ids.
const BEFORE_SEQ_SQLITE: &str =
    "(CASE WHEN ?2 = 9223372036854775807 THEN 9223372036854775807 ELSE \
     COALESCE((SELECT seq FROM messages WHERE id = ?2 AND conv = ?1), \
     (SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE conv = ?1 AND id < ?2)) END)";

const MSG_SELECT: &str = "SELECT m.id, m.ts, m.from_user, u.name, m.text, m.to_user, m.group_id, \
                          m.conv, m.seq FROM messages m JOIN users u ON u.id = m.from_user";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn sql_error(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::DatabaseBusy | C::DatabaseLocked | C::DiskFull | C::SystemIoFailure)
        | Some(C::CannotOpen) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Internal(e.to_string()),
    }
}

fn row_to_msg(row: &rusqlite::Row<'_>) -> rusqlite::Result<Msg> {
    Ok(Msg {
        id: row.get(0)?,
        ts: row.get(1)?,
        from: row.get(2)?,
        from_name: row.get(3)?,
        text: row.get(4)?,
        to: row.get(5)?,
        group: row.get(6)?,
        conv: row.get(7)?,
        seq: row.get(8)?,
    })
}

fn role_of(text: &str) -> Role {
    Role::parse(text).unwrap_or(Role::Member)
}

/// The embedded SQLite store.
pub struct SqliteStore {
    writes: mpsc::Sender<Write>,
    /// Acks not yet written; the writer folds them in every [`CHECKPOINT_EVERY`].
    acks: Arc<PendingAcks>,
    reads: Arc<ReadPool>,
    /// Dropping it stops the checkpoint thread.
    _stop_checkpoints: std::sync::mpsc::Sender<()>,
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path` and starts the
    /// writer thread. Returns the store and its commit log.
    pub fn open(path: &Path, durability: Durability) -> StoreResult<(SqliteStore, CommitLog)> {
        perms::restrict(path).map_err(|e| {
            StoreError::Internal(format!("cannot create or protect {}: {e}", path.display()))
        })?;
        let mut conn = Connection::open(path).map_err(sql_error)?;
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        // Small pages: a commit writes every page it dirtied to the WAL, and message inserts
        // dirty one scattered leaf per index; 1 KiB pages make that a quarter of the bytes.
        // (Takes effect only when the file is created.)
        conn.execute_batch("PRAGMA page_size = 1024;")
            .map_err(sql_error)?;
        // A 16 MiB page cache, not more: when an insert rebalances a b-tree, SQLite parks a
        // page at the pending-byte page number for a moment, and every such commit then
        // scans the cache's whole hash table (`pcache1TruncateUnsafe`). With 64 MiB of
        // 1 KiB pages that scan took 7% of the server's CPU under load (perf).
        conn.execute_batch(&format!(
            "PRAGMA cache_size = -16384; PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; \
             PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; \
             PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;"
        ))
        .map_err(sql_error)?;
        migrate(&mut conn)?;
        let next_msg_id = last_msg_id(&conn)? + 1;
        let (write_tx, write_rx) = mpsc::channel(WRITE_QUEUE);
        let acks = Arc::new(PendingAcks::default());
        let (commit_tx, commit_rx) = mpsc::channel(WRITE_QUEUE);
        let writer = Writer {
            conn,
            next_msg_id,
            last_ts: 0,
            known_users: HashSet::new(),
            seqs: HashMap::new(),
            touched: HashMap::new(),
            commits: commit_tx,
            acks: acks.clone(),
        };
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.run(write_rx))
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let (stop_checkpoints, checkpoint_rx) = std::sync::mpsc::channel::<()>();
        let checkpoint_path = path.to_path_buf();
        let (flush_acks, pending_acks) = (write_tx.clone(), acks.clone());
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                checkpoint_loop(&checkpoint_path, checkpoint_rx, &flush_acks, &pending_acks)
            })
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let reads = Arc::new(ReadPool::start(path)?);
        Ok((
            SqliteStore {
                writes: write_tx,
                acks,
                reads,
                _stop_checkpoints: stop_checkpoints,
            },
            commit_rx,
        ))
    }

    async fn write<T>(&self, make: impl FnOnce(Reply<T>) -> Write) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel();
        self.writes
            .send(make(tx))
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the store writer stopped".into()))?
    }

    /// A rare write (an admin's, a purge) on a connection of its own, beside the writer
    /// thread: WAL lets one of them write at a time, and these are short.
    async fn side_write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.on_side_connection(move |conn| f(conn).map_err(sql_error))
            .await
    }

    /// Runs `f` on a connection of its own, on a blocking thread (see [`Self::side_write`]
    /// and [`Self::consent`]).
    pub(super) async fn on_side_connection<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let path = self.reads.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = Connection::open(&path).map_err(sql_error)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(sql_error)?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.reads.run(f).await
    }
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Checkpoints the WAL from its own connection, so that the writer never pays for it
/// inside a commit (SQLite's automatic checkpoint would run in the writer's COMMIT and
/// stall every send behind it). A WAL checkpoint does not block the writer.
fn checkpoint_loop(
    path: &Path,
    stop: std::sync::mpsc::Receiver<()>,
    writes: &mpsc::Sender<Write>,
    acks: &PendingAcks,
) {
    let conn = match Connection::open(path) {
        Ok(conn) => conn,
        Err(e) => {
            tracing::error!(error = %e, "store: no checkpoint connection; the WAL will grow");
            return;
        }
    };
    let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY)
    {
        if !acks.is_empty() {
            // A full queue means a batch is coming anyway; it need not carry the flush.
            let _ = writes.try_send(Write::FlushAcks);
        }
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "store: checkpoint failed");
        }
    }
    // Last one: fold the whole WAL back into the database file.
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations \
         (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL)",
    )
    .map_err(sql_error)?;
    // A migration may rebuild a table that others reference, which SQLite allows only with
    // foreign keys off (they cannot be switched inside a transaction); they are checked
    // after, and switched back on.
    conn.execute_batch("PRAGMA foreign_keys = OFF")
        .map_err(sql_error)?;
    let applied = apply_migrations(conn);
    conn.execute_batch("PRAGMA foreign_keys = ON")
        .map_err(sql_error)?;
    applied?;
    let broken: Option<String> = conn
        .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
        .optional()
        .map_err(sql_error)?;
    if let Some(table) = broken {
        return Err(StoreError::Internal(format!(
            "the migrated store has rows in {table} that point nowhere"
        )));
    }
    Ok(())
}

fn apply_migrations(conn: &mut Connection) -> StoreResult<()> {
    for (version, sql) in MIGRATIONS {
        // IMMEDIATE takes the write lock first, so two processes cannot both apply it.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        let applied: bool = tx
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE version = ?1)",
                [version],
                |r| r.get(0),
            )
            .map_err(sql_error)?;
        if !applied {
            tx.execute_batch(sql).map_err(sql_error)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_ms) VALUES (?1, ?2)",
                params![version, now_ms()],
            )
            .map_err(sql_error)?;
            tracing::info!(version, "applied migration");
        }
        tx.commit().map_err(sql_error)?;
    }
    fill_name_keys(conn)
}

/// Gives every user without a name key its key (see the migration `0009_name_keys`).
fn fill_name_keys(conn: &mut Connection) -> StoreResult<()> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql_error)?;
    let users: Vec<(UserId, String)> = tx
        .prepare("SELECT id, name FROM users WHERE name_key IS NULL ORDER BY id")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(sql_error)?;
    for (id, name) in &users {
        let key = crate::names::name_key(name);
        let set = tx
            .execute(
                "UPDATE OR IGNORE users SET name_key = ?2 WHERE id = ?1",
                params![id, key],
            )
            .map_err(sql_error)?;
        if set == 0 {
            tracing::warn!(
                user = id,
                "a user's name looks like another's; it keeps its own key"
            );
            tx.execute(
                "UPDATE users SET name_key = ?2 WHERE id = ?1",
                params![id, format!("{key}#{id}")],
            )
            .map_err(sql_error)?;
        }
    }
    tx.commit().map_err(sql_error)
}

/// The last message id given out: never below one already used, even when the newest
/// messages were purged (or a membership change took the last id), so no id is reused.
fn last_msg_id(conn: &Connection) -> StoreResult<MsgId> {
    conn.query_row(
        "SELECT MAX(COALESCE((SELECT last_msg_id FROM log_position WHERE id = 1), 0), \
                COALESCE((SELECT MAX(id) FROM messages), 0))",
        [],
        |r| r.get(0),
    )
    .map_err(sql_error)
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    next_msg_id: MsgId,
    last_ts: i64,
    /// Users known to exist (users are never deleted), to skip a lookup per message.
    known_users: HashSet<UserId>,
    /// The last seq given out per conversation (read from `conversations` on first use),
    /// so a message takes its seq without a read. Cleared when a commit fails.
    seqs: HashMap<ConvId, Seq>,
    /// The conversations this batch wrote to, written to `conversations` before COMMIT.
    touched: HashMap<ConvId, ConvTouch>,
    commits: mpsc::Sender<CommitBatch>,
    acks: Arc<PendingAcks>,
}

impl Writer {
    fn run(mut self, mut queue: mpsc::Receiver<Write>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = queue.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(write) => batch.push(write),
                    Err(_) => break,
                }
            }
            let close = self.apply(&mut batch);
            if let Some(reply) = close {
                let _ = reply.send(());
                return;
            }
        }
    }

    /// Runs one batch in one transaction. Returns the close request, if the batch had one.
    fn apply(&mut self, batch: &mut Vec<Write>) -> Option<oneshot::Sender<()>> {
        let mut finishers: Vec<Finisher> = Vec::with_capacity(batch.len());
        let mut commits = Vec::new();
        let mut close = None;
        let mut flush_acks = false;
        let first_id = self.next_msg_id;
        let begun = self
            .conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(sql_error);
        if let Err(e) = begun {
            tracing::error!(error = %e, "store: cannot begin a transaction");
            for write in batch.drain(..) {
                fail(write, &e);
            }
            return None;
        }
        for write in batch.drain(..) {
            match write {
                Write::FlushAcks => flush_acks = true,
                Write::Close { reply } => {
                    flush_acks = true;
                    close = Some(reply);
                }
                other => self.apply_one(other, &mut finishers, &mut commits),
            }
        }
        let acks = if flush_acks {
            self.acks.snapshot()
        } else {
            AckMap::new()
        };
        self.write_acks(&acks);
        if let Err(e) = self.write_touched() {
            tracing::error!(error = %e, "store: cannot record conversations");
        }
        if self.next_msg_id != first_id {
            let moved = self
                .conn
                .prepare_cached("UPDATE log_position SET last_msg_id = ?1 WHERE id = 1")
                .and_then(|mut s| s.execute([self.next_msg_id - 1]));
            if let Err(e) = moved {
                tracing::error!(error = %e, "store: cannot record the last message id");
            }
        }
        let outcome = self.conn.execute_batch("COMMIT").map_err(sql_error);
        match &outcome {
            Ok(()) => {
                self.acks.forget(&acks);
                // Announce before answering, so that a message is on its way to its
                // recipients no later than its sender hears it is stored.
                let batch = CommitBatch {
                    after: first_id - 1,
                    last: self.next_msg_id - 1,
                    commits,
                };
                if !batch.commits.is_empty() {
                    let _ = self.commits.blocking_send(batch);
                }
                for finish in finishers {
                    finish(None);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store: commit failed");
                let _ = self.conn.execute_batch("ROLLBACK");
                self.next_msg_id = first_id;
                self.known_users.clear();
                self.seqs.clear();
                for finish in finishers {
                    finish(Some(e));
                }
            }
        }
        close
    }

    fn apply_one(&mut self, write: Write, done: &mut Vec<Finisher>, commits: &mut Vec<Commit>) {
        match write {
            Write::CreateUser { name, hash, reply } => {
                let result = self.create_user(&name, &hash);
                done.push(finisher(reply, result));
            }
            Write::CreateToken {
                user,
                hash,
                expires_ms,
                reply,
            } => {
                let result = self
                    .conn
                    .prepare_cached(
                        "INSERT INTO tokens (hash, user_id, expires_ms) VALUES (?1, ?2, ?3)",
                    )
                    .and_then(|mut s| s.execute(params![hash, user, expires_ms]))
                    .map(|_| ())
                    .map_err(sql_error);
                done.push(finisher(reply, result));
            }
            Write::DeleteToken { hash, reply } => {
                let result = self
                    .conn
                    .execute("DELETE FROM tokens WHERE hash = ?1", [hash])
                    .map(|_| ())
                    .map_err(sql_error);
                done.push(finisher(reply, result));
            }
            Write::CreateGroup {
                creator,
                name,
                desc,
                settings,
                reply,
            } => {
                let at = self.next_msg_id;
                let result =
                    self.savepoint(|w| w.create_group(creator, &name, &desc, settings, at));
                if let Ok(group) = &result {
                    self.next_stamp();
                    commits.push(Commit::Joined {
                        group: group.id,
                        user: creator,
                        seq: 0,
                    });
                }
                done.push(finisher(reply, result));
            }
            Write::JoinGroup { group, user, reply } => {
                let result = self.savepoint(|w| w.join_group(group, user));
                if result.is_ok() {
                    self.next_stamp();
                    let seq = self.seqs.get(&group_conv(group)).copied().unwrap_or(0);
                    commits.push(Commit::Joined { group, user, seq });
                }
                done.push(finisher(reply, result));
            }
            Write::LeaveGroup { group, user, reply } => {
                let result = self.savepoint(|w| w.leave_group(group, user));
                if result.is_ok() {
                    let at = self.next_stamp().0;
                    commits.push(Commit::Left { group, user, at });
                }
                done.push(finisher(reply, result));
            }
            Write::GroupKick {
                group,
                by,
                member,
                reply,
            } => {
                let result = self.savepoint(|w| w.group_kick(group, by, member));
                if result.is_ok() {
                    let at = self.next_stamp().0;
                    commits.push(Commit::Left {
                        group,
                        user: member,
                        at,
                    });
                }
                done.push(finisher(reply, result));
            }
            Write::DeleteGroup { group, user, reply } => {
                let result = self.savepoint(|w| w.delete_group(group, user));
                if result.is_ok() {
                    let at = self.next_stamp().0;
                    commits.push(Commit::GroupDeleted { group, at });
                }
                done.push(finisher(reply, result));
            }
            Write::Send {
                from,
                to,
                text,
                cmid,
                reply,
            } => {
                let result = match self.resend(from.id, cmid.as_deref()) {
                    Ok(Some(first)) => Ok(first),
                    Ok(None) => self.send(from, to, text, cmid).inspect(|msg| {
                        commits.push(Commit::Msg(msg.clone()));
                    }),
                    Err(e) => Err(e),
                };
                done.push(finisher(reply, result));
            }
            Write::GroupSend {
                from,
                group,
                text,
                cmid,
                reply,
            } => {
                let result = match self.resend(from.id, cmid.as_deref()) {
                    Ok(Some(first)) => Ok(first),
                    Ok(None) => self.group_send(from, group, text, cmid).inspect(|msg| {
                        commits.push(Commit::Msg(msg.clone()));
                    }),
                    Err(e) => Err(e),
                };
                done.push(finisher(reply, result));
            }
            Write::MarkRead {
                user,
                conv,
                seq,
                reply,
            } => {
                let result = self.savepoint(|w| w.mark_read(user, conv, seq));
                done.push(finisher(reply, result));
            }
            Write::FlushAcks | Write::Close { .. } => {}
        }
    }

    /// Runs a multi-statement write so that it applies whole or not at all.
    fn savepoint<T>(&mut self, f: impl FnOnce(&mut Self) -> StoreResult<T>) -> StoreResult<T> {
        self.conn.execute_batch("SAVEPOINT op").map_err(sql_error)?;
        let result = f(self);
        let end = if result.is_ok() {
            "RELEASE op"
        } else {
            "ROLLBACK TO op; RELEASE op"
        };
        self.conn.execute_batch(end).map_err(sql_error)?;
        result
    }

    fn user_exists(&mut self, id: UserId) -> StoreResult<bool> {
        if self.known_users.contains(&id) {
            return Ok(true);
        }
        let exists: bool = self
            .conn
            .prepare_cached("SELECT EXISTS(SELECT 1 FROM users WHERE id = ?1)")
            .and_then(|mut s| s.query_row([id], |r| r.get(0)))
            .map_err(sql_error)?;
        if exists {
            self.known_users.insert(id);
        }
        Ok(exists)
    }

    fn create_user(&mut self, name: &str, hash: &str) -> StoreResult<User> {
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO users (name, name_key, password_hash, created_ms) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![name, crate::names::name_key(name), hash, now_ms()])
            })
            .map_err(sql_error)?;
        if inserted == 0 {
            return Err(StoreError::Conflict("that name is taken"));
        }
        let id = self.conn.last_insert_rowid();
        self.known_users.insert(id);
        Ok(User {
            id,
            name: name.to_string(),
        })
    }

    /// Creates a group, its conversation (whose last activity is `at`, the id its
    /// creation takes in the log) and the creator's membership.
    fn create_group(
        &mut self,
        creator: UserId,
        name: &str,
        desc: &str,
        settings: GroupSettings,
        at: MsgId,
    ) -> StoreResult<GroupRow> {
        let now = now_ms();
        self.conn
            .execute(
                "INSERT INTO chat_groups \
                 (name, description, creator, created_ms, open, shared_history) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    name,
                    desc,
                    creator,
                    now,
                    settings.open,
                    settings.shared_history
                ],
            )
            .map_err(sql_error)?;
        let id = self.conn.last_insert_rowid();
        self.conn
            .execute(
                "INSERT INTO group_members (group_id, user_id, role, joined_after, joined_seq) \
                 VALUES (?1, ?2, 'creator', ?3, 0)",
                params![id, creator, self.next_msg_id - 1],
            )
            .and_then(|_| {
                self.conn.execute(
                    "INSERT INTO conversations \
                     (id, group_id, last_seq, last_msg_id, last_ts) VALUES (?1, ?2, 0, ?3, ?4)",
                    params![group_conv(id), id, at, now],
                )
            })
            .map_err(sql_error)?;
        Ok(GroupRow {
            id,
            name: name.to_string(),
            desc: desc.to_string(),
            settings,
        })
    }

    fn group_row(&self, group: GroupId) -> StoreResult<Option<GroupRow>> {
        consent::group_row(&self.conn, group)
    }

    fn role(&self, group: GroupId, user: UserId) -> StoreResult<Option<Role>> {
        consent::role_in(&self.conn, group, user)
    }

    fn join_group(&mut self, group: GroupId, user: UserId) -> StoreResult<GroupRow> {
        let row = self
            .group_row(group)?
            .ok_or(StoreError::NotFound("no such group"))?;
        if !consent::may_join(&self.conn, &row, user)? {
            return Err(StoreError::NotFound("no such group"));
        }
        let joined_seq = self.last_seq(group_conv(group))?;
        let inserted = self
            .conn
            .execute(
                "INSERT INTO group_members (group_id, user_id, role, joined_after, joined_seq) \
                 VALUES (?1, ?2, 'member', ?3, ?4) ON CONFLICT DO NOTHING",
                params![group, user, self.next_msg_id - 1, joined_seq],
            )
            .map_err(sql_error)?;
        if inserted == 0 {
            return Err(StoreError::Conflict("already a member"));
        }
        Ok(row)
    }

    fn leave_group(&mut self, group: GroupId, user: UserId) -> StoreResult<()> {
        if self.group_row(group)?.is_none() {
            return Err(StoreError::NotFound("no such group"));
        }
        match self.role(group, user)? {
            None => Err(StoreError::Forbidden("not a member of that group")),
            Some(Role::Creator) => Err(StoreError::Forbidden(
                "the creator cannot leave a group; delete it instead",
            )),
            Some(Role::Admin | Role::Member) => {
                self.conn
                    .execute(
                        "DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2",
                        params![group, user],
                    )
                    .map_err(sql_error)?;
                Ok(())
            }
        }
    }

    fn group_kick(&mut self, group: GroupId, by: UserId, member: UserId) -> StoreResult<()> {
        if self.group_row(group)?.is_none() {
            return Err(StoreError::NotFound("no such group"));
        }
        let by_role = self.role(group, by)?;
        if !matches!(by_role, Some(Role::Creator | Role::Admin)) {
            return Err(StoreError::Forbidden(
                "only the group's creator or its admins may remove a member",
            ));
        }
        match self.role(group, member)? {
            Some(Role::Admin) if by_role != Some(Role::Creator) => Err(StoreError::Forbidden(
                "only the group's creator may remove an admin",
            )),
            Some(Role::Creator) => Err(StoreError::Forbidden(
                "the group's creator cannot be removed",
            )),
            Some(Role::Member | Role::Admin) => {
                self.conn
                    .execute(
                        "DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2",
                        params![group, member],
                    )
                    .and_then(|_| {
                        self.conn.execute(
                            "INSERT INTO group_bans (group_id, user_id, created_ms) \
                             VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                            params![group, member, now_ms()],
                        )
                    })
                    .map_err(sql_error)?;
                Ok(())
            }
            _ => Err(StoreError::NotFound(
                "that user is not a member of the group",
            )),
        }
    }

    fn delete_group(&mut self, group: GroupId, user: UserId) -> StoreResult<Vec<UserId>> {
        if self.group_row(group)?.is_none() {
            return Err(StoreError::NotFound("no such group"));
        }
        if self.role(group, user)? != Some(Role::Creator) {
            return Err(StoreError::Forbidden("only the creator may delete a group"));
        }
        let members = member_ids(&self.conn, group).map_err(sql_error)?;
        // Its messages go with it: nothing of a deleted group shows anywhere again.
        let conv = group_conv(group);
        self.seqs.remove(&conv);
        self.touched.remove(&conv);
        self.conn
            .execute("DELETE FROM messages WHERE conv = ?1", [conv])
            .and_then(|_| {
                self.conn
                    .execute("DELETE FROM cursors WHERE conv = ?1", [conv])
            })
            .and_then(|_| {
                self.conn
                    .execute("DELETE FROM conversations WHERE id = ?1", [conv])
            })
            .and_then(|_| {
                self.conn
                    .execute("DELETE FROM group_members WHERE group_id = ?1", [group])
            })
            .and_then(|_| {
                self.conn
                    .execute("DELETE FROM chat_groups WHERE id = ?1", [group])
            })
            .map_err(sql_error)?;
        Ok(members)
    }

    fn next_stamp(&mut self) -> (MsgId, i64) {
        let id = self.next_msg_id;
        self.next_msg_id += 1;
        self.last_ts = self.last_ts.max(now_ms());
        (id, self.last_ts)
    }

    fn send(
        &mut self,
        from: User,
        to: UserId,
        text: String,
        cmid: Option<String>,
    ) -> StoreResult<Arc<Msg>> {
        if !self.user_exists(to)? {
            return Err(StoreError::NotFound("no such user"));
        }
        let conv = direct_conv(from.id, to);
        let msg = Msg {
            id: 0,
            ts: 0,
            from: from.id,
            from_name: from.name,
            text,
            to: Some(to),
            group: None,
            conv,
            seq: 0,
        };
        self.insert_message(msg, cmid)
    }

    fn group_send(
        &mut self,
        from: User,
        group: GroupId,
        text: String,
        cmid: Option<String>,
    ) -> StoreResult<Arc<Msg>> {
        if self.role(group, from.id)?.is_none() {
            return Err(match self.group_row(group)? {
                None => StoreError::NotFound("no such group"),
                Some(_) => StoreError::Forbidden("not a member of that group"),
            });
        }
        let msg = Msg {
            id: 0,
            ts: 0,
            from: from.id,
            from_name: from.name,
            text,
            to: None,
            group: Some(group),
            conv: group_conv(group),
            seq: 0,
        };
        self.insert_message(msg, cmid)
    }

    /// Gives `msg` its id, time and seq, and inserts it (with its `cmid`, if any).
    fn insert_message(&mut self, mut msg: Msg, cmid: Option<String>) -> StoreResult<Arc<Msg>> {
        let seq = self.last_seq(msg.conv)? + 1;
        let (id, ts) = self.next_stamp();
        (msg.id, msg.ts, msg.seq) = (id, ts, seq);
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO messages (id, ts, from_user, to_user, group_id, conv, seq, text) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id, ts, msg.from, msg.to, msg.group, msg.conv, seq, msg.text
                ])
            })
            .and_then(|_| {
                match &cmid {
                None => Ok(0),
                Some(cmid) => self
                    .conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO client_msg_ids (user_id, cmid, msg_id, created_ms) \
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .and_then(|mut s| s.execute(params![msg.from, cmid, id, ts])),
            }
            });
        if let Err(e) = inserted {
            self.next_msg_id = id;
            return Err(sql_error(e));
        }
        self.seqs.insert(msg.conv, seq);
        self.touched.insert(
            msg.conv,
            ConvTouch {
                last_seq: seq,
                last_msg_id: id,
                last_ts: ts,
                pair: msg.to.map(|to| (msg.from.min(to), msg.from.max(to))),
                group: msg.group,
            },
        );
        Ok(Arc::new(msg))
    }
}

fn member_ids(conn: &Connection, group: GroupId) -> rusqlite::Result<Vec<UserId>> {
    let mut stmt = conn.prepare_cached("SELECT user_id FROM group_members WHERE group_id = ?1")?;
    let ids = stmt.query_map([group], |r| r.get(0))?;
    ids.collect()
}

/// A member from `SELECT u.id, u.name, gm.role`.
fn member_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(User, Role)> {
    let role: String = r.get(2)?;
    Ok((
        User {
            id: r.get(0)?,
            name: r.get(1)?,
        },
        role_of(&role),
    ))
}

fn members_with_roles(conn: &Connection, group: GroupId) -> rusqlite::Result<Vec<(User, Role)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT u.id, u.name, gm.role FROM group_members gm JOIN users u ON u.id = gm.user_id \
         WHERE gm.group_id = ?1 ORDER BY gm.role = 'member', u.id",
    )?;
    let rows = stmt.query_map([group], member_row)?;
    rows.collect()
}

fn groups_of(
    conn: &Connection,
    user: UserId,
    page: GroupsPage,
) -> rusqlite::Result<Vec<GroupWithMembers>> {
    let mut stmt = conn.prepare_cached(
        "SELECT g.id, g.name, g.description, g.open, g.shared_history, gm.role, \
         (SELECT COUNT(*) FROM group_members c WHERE c.group_id = g.id) \
         FROM group_members gm JOIN chat_groups g ON g.id = gm.group_id \
         WHERE gm.user_id = ?1 AND gm.group_id > ?2 ORDER BY gm.group_id LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![user, page.after, page.limit as i64], |r| {
        let role: String = r.get(5)?;
        Ok((consent::row_to_group(r)?, role_of(&role), r.get(6)?))
    })?;
    let mut groups = Vec::new();
    for row in rows {
        let (group, role, member_count) = row?;
        let members = members_page(conn, group.id, 0, page.members)?;
        groups.push(GroupWithMembers {
            group,
            role,
            member_count,
            members,
        });
    }
    Ok(groups)
}

/// Members of `group` with an id above `after`, at most `limit`, by id (on the primary
/// key: the cost grows with the page, not the group).
fn members_page(
    conn: &Connection,
    group: GroupId,
    after: UserId,
    limit: usize,
) -> rusqlite::Result<Vec<(User, Role)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT u.id, u.name, gm.role FROM group_members gm JOIN users u ON u.id = gm.user_id \
         WHERE gm.group_id = ?1 AND gm.user_id > ?2 ORDER BY gm.user_id LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![group, after, limit as i64], member_row)?;
    rows.collect()
}

fn friends_of(conn: &Connection, user: UserId) -> rusqlite::Result<Vec<User>> {
    let mut stmt = conn.prepare_cached(
        "SELECT u.id, u.name FROM friends f JOIN users u ON u.id = f.friend_id \
         WHERE f.user_id = ?1 ORDER BY u.id",
    )?;
    let rows = stmt.query_map([user], |r| {
        Ok(User {
            id: r.get(0)?,
            name: r.get(1)?,
        })
    })?;
    rows.collect()
}

fn credentials(
    conn: &Connection,
    sql: &str,
    key: impl rusqlite::ToSql,
) -> rusqlite::Result<Option<Credentials>> {
    conn.prepare_cached(sql)?
        .query_row([key], |r| {
            Ok(Credentials {
                user: User {
                    id: r.get(0)?,
                    name: r.get(1)?,
                },
                password_hash: r.get(2)?,
            })
        })
        .optional()
}

/// One read, as a reader thread runs it.
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// The reader threads and the queue into them.
struct ReadPool {
    path: PathBuf,
    jobs: std::sync::mpsc::Sender<ReadJob>,
}

impl ReadPool {
    /// Opens [`READERS`] read-only connections, each on a thread of its own.
    fn start(path: &Path) -> StoreResult<ReadPool> {
        let (jobs, queue) = std::sync::mpsc::channel::<ReadJob>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..READERS {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(sql_error)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(sql_error)?;
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("sqlite-reader-{i}"))
                .spawn(move || read_loop(&conn, &queue))
                .map_err(|e| StoreError::Internal(e.to_string()))?;
        }
        Ok(ReadPool {
            path: path.to_path_buf(),
            jobs,
        })
    }

    async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let _ = tx.send(f(conn).map_err(sql_error));
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        // A job that panicked dropped its sender.
        rx.await
            .map_err(|_| StoreError::Internal("a read failed".into()))?
    }
}

/// A reader thread: runs what is queued, a batch per read transaction, until the store
/// is dropped.
fn read_loop(conn: &Connection, queue: &Mutex<std::sync::mpsc::Receiver<ReadJob>>) {
    let mut batch = Vec::with_capacity(READ_BATCH);
    loop {
        {
            // The other readers wait for the lock meanwhile: they would wait for jobs.
            let queue = queue.lock().unwrap_or_else(|e| e.into_inner());
            match queue.recv() {
                Ok(job) => batch.push(job),
                Err(_) => return, // The store is gone.
            }
            while batch.len() < READ_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        // Every job in the batch was queued before this transaction began, so each sees
        // every write that was committed before it asked.
        let in_transaction = batch.len() > 1 && conn.execute_batch("BEGIN").is_ok();
        for job in batch.drain(..) {
            let run = std::panic::AssertUnwindSafe(|| job(conn));
            if std::panic::catch_unwind(run).is_err() {
                tracing::error!("store: a read panicked");
            }
        }
        if in_transaction && conn.execute_batch("COMMIT").is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, name: &str, password_hash: &str) -> StoreResult<User> {
        let (name, hash) = (name.to_string(), password_hash.to_string());
        self.write(|reply| Write::CreateUser { name, hash, reply })
            .await
    }

    async fn credentials_by_name(&self, name: &str) -> StoreResult<Option<Credentials>> {
        let key = crate::names::name_key(name);
        self.read(move |c| {
            credentials(
                c,
                "SELECT id, name, password_hash FROM users WHERE name_key = ?1",
                key,
            )
        })
        .await
    }

    async fn credentials_by_id(&self, id: UserId) -> StoreResult<Option<Credentials>> {
        self.read(move |c| {
            credentials(
                c,
                "SELECT id, name, password_hash FROM users WHERE id = ?1",
                id,
            )
        })
        .await
    }

    async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        self.read(move |c| {
            c.prepare_cached("SELECT id, name FROM users WHERE id = ?1")?
                .query_row([id], |r| {
                    Ok(User {
                        id: r.get(0)?,
                        name: r.get(1)?,
                    })
                })
                .optional()
        })
        .await
    }

    async fn create_token(
        &self,
        user: UserId,
        token_hash: &[u8],
        expires_ms: i64,
    ) -> StoreResult<()> {
        let hash = token_hash.to_vec();
        self.write(|reply| Write::CreateToken {
            user,
            hash,
            expires_ms,
            reply,
        })
        .await
    }

    async fn token_user(&self, token_hash: &[u8], now_ms: i64) -> StoreResult<Option<User>> {
        let hash = token_hash.to_vec();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT u.id, u.name FROM tokens t JOIN users u ON u.id = t.user_id \
                 WHERE t.hash = ?1 AND t.expires_ms > ?2",
            )?
            .query_row(params![hash, now_ms], |r| {
                Ok(User {
                    id: r.get(0)?,
                    name: r.get(1)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn delete_token(&self, token_hash: &[u8]) -> StoreResult<()> {
        let hash = token_hash.to_vec();
        self.write(|reply| Write::DeleteToken { hash, reply }).await
    }

    async fn revoke_tokens(&self, user: UserId) -> StoreResult<u64> {
        let n = self
            .side_write(move |c| c.execute("DELETE FROM tokens WHERE user_id = ?1", [user]))
            .await?;
        Ok(n as u64)
    }

    async fn set_password(&self, user: UserId, password_hash: &str) -> StoreResult<()> {
        let hash = password_hash.to_string();
        let changed = self
            .side_write(move |c| {
                c.execute(
                    "UPDATE users SET password_hash = ?2 WHERE id = ?1",
                    params![user, hash],
                )
            })
            .await?;
        if changed == 0 {
            return Err(StoreError::NotFound("no such user"));
        }
        Ok(())
    }

    async fn add_friend(&self, user: UserId, friend: UserId) -> StoreResult<Befriended> {
        self.consent(move |c| consent::add_friend(c, user, friend))
            .await
    }

    async fn remove_friend(&self, user: UserId, friend: UserId) -> StoreResult<()> {
        self.consent(move |c| consent::remove_friend(c, user, friend))
            .await
    }

    async fn decline_friend(&self, user: UserId, from: UserId) -> StoreResult<()> {
        self.consent(move |c| consent::decline_friend(c, user, from))
            .await
    }

    async fn friend_requests(&self, user: UserId) -> StoreResult<(Vec<User>, Vec<User>)> {
        self.consent(move |c| consent::friend_requests(c, user))
            .await
    }

    async fn block(&self, user: UserId, other: UserId) -> StoreResult<bool> {
        self.consent(move |c| consent::block(c, user, other)).await
    }

    async fn unblock(&self, user: UserId, other: UserId) -> StoreResult<()> {
        self.consent(move |c| consent::unblock(c, user, other))
            .await
    }

    async fn blocked(&self, user: UserId) -> StoreResult<Vec<User>> {
        self.consent(move |c| consent::blocked(c, user)).await
    }

    async fn blocks(&self) -> StoreResult<Vec<(UserId, UserId)>> {
        self.read(consent::all_blocks).await
    }

    async fn group_invite(
        &self,
        group: GroupId,
        by: UserId,
        user: UserId,
    ) -> StoreResult<GroupRow> {
        self.consent(move |c| consent::group_invite(c, group, by, user))
            .await
    }

    async fn decline_invite(&self, group: GroupId, user: UserId) -> StoreResult<()> {
        self.consent(move |c| consent::decline_invite(c, group, user))
            .await
    }

    async fn invites(&self, user: UserId) -> StoreResult<Vec<Invite>> {
        self.consent(move |c| consent::invites(c, user)).await
    }

    async fn set_group_role(
        &self,
        group: GroupId,
        by: UserId,
        user: UserId,
        role: Role,
    ) -> StoreResult<()> {
        self.consent(move |c| consent::set_group_role(c, group, by, user, role))
            .await
    }

    async fn friend_ids(&self, user: UserId) -> StoreResult<Vec<UserId>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached("SELECT friend_id FROM friends WHERE user_id = ?1")?;
            let ids = stmt.query_map([user], |r| r.get(0))?;
            ids.collect()
        })
        .await
    }

    async fn friends(&self, user: UserId) -> StoreResult<Vec<User>> {
        self.read(move |c| friends_of(c, user)).await
    }

    async fn create_group(
        &self,
        creator: UserId,
        name: &str,
        desc: &str,
        settings: GroupSettings,
    ) -> StoreResult<GroupRow> {
        let (name, desc) = (name.to_string(), desc.to_string());
        self.write(|reply| Write::CreateGroup {
            creator,
            name,
            desc,
            settings,
            reply,
        })
        .await
    }

    async fn join_group(&self, group: GroupId, user: UserId) -> StoreResult<GroupRow> {
        self.write(|reply| Write::JoinGroup { group, user, reply })
            .await
    }

    async fn leave_group(&self, group: GroupId, user: UserId) -> StoreResult<()> {
        self.write(|reply| Write::LeaveGroup { group, user, reply })
            .await
    }

    async fn delete_group(&self, group: GroupId, user: UserId) -> StoreResult<Vec<UserId>> {
        self.write(|reply| Write::DeleteGroup { group, user, reply })
            .await
    }

    async fn group_members(&self, group: GroupId) -> StoreResult<Vec<(User, Role)>> {
        let members = self.read(move |c| members_with_roles(c, group)).await?;
        if members.is_empty() {
            // Every group has its creator as a member, so an empty list means no group.
            return Err(StoreError::NotFound("no such group"));
        }
        Ok(members)
    }

    async fn group_member_ids(&self, group: GroupId) -> StoreResult<Vec<(UserId, Seq)>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT user_id, joined_seq FROM group_members WHERE group_id = ?1",
            )?;
            let rows = stmt.query_map([group], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    async fn group_members_page(
        &self,
        group: GroupId,
        viewer: UserId,
        after: UserId,
        limit: usize,
    ) -> StoreResult<Vec<(User, Role)>> {
        let (exists, member, page) = self
            .read(move |c| {
                let exists = c
                    .prepare_cached("SELECT 1 FROM chat_groups WHERE id = ?1")?
                    .exists([group])?;
                let member = c
                    .prepare_cached(
                        "SELECT 1 FROM group_members WHERE group_id = ?1 AND user_id = ?2",
                    )?
                    .exists(params![group, viewer])?;
                let page = if member {
                    members_page(c, group, after, limit)?
                } else {
                    Vec::new()
                };
                Ok((exists, member, page))
            })
            .await?;
        match (exists, member) {
            (false, _) => Err(StoreError::NotFound("no such group")),
            (true, false) => Err(StoreError::Forbidden("not a member of that group")),
            (true, true) => Ok(page),
        }
    }

    async fn user_groups(
        &self,
        user: UserId,
        page: GroupsPage,
    ) -> StoreResult<Vec<GroupWithMembers>> {
        self.read(move |c| groups_of(c, user, page)).await
    }

    async fn snapshot(&self, user: UserId, groups: GroupsPage) -> StoreResult<Snapshot> {
        self.read(move |c| {
            Ok(Snapshot {
                friends: friends_of(c, user)?,
                groups: groups_of(c, user, groups)?,
                group_ids: c
                    .prepare_cached("SELECT group_id FROM group_members WHERE user_id = ?1")?
                    .query_map([user], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?,
                admin: c
                    .prepare_cached("SELECT admin FROM users WHERE id = ?1")?
                    .query_row([user], |r| r.get(0))
                    .optional()?
                    .unwrap_or(false),
            })
        })
        .await
    }

    async fn send(
        &self,
        from: &User,
        to: UserId,
        text: &str,
        cmid: Option<&str>,
    ) -> StoreResult<Arc<Msg>> {
        let (from, text, cmid) = (from.clone(), text.to_string(), cmid.map(str::to_string));
        self.write(|reply| Write::Send {
            from,
            to,
            text,
            cmid,
            reply,
        })
        .await
    }

    async fn group_send(
        &self,
        from: &User,
        group: GroupId,
        text: &str,
        cmid: Option<&str>,
    ) -> StoreResult<Arc<Msg>> {
        let (from, text, cmid) = (from.clone(), text.to_string(), cmid.map(str::to_string));
        self.write(|reply| Write::GroupSend {
            from,
            group,
            text,
            cmid,
            reply,
        })
        .await
    }

    async fn history(
        &self,
        user: UserId,
        conversation: Conversation,
        before: Option<MsgId>,
        limit: usize,
    ) -> StoreResult<Vec<Msg>> {
        let before = before.unwrap_or(MsgId::MAX);
        let limit = limit as i64;
        let result = self
            .read(move |c| -> rusqlite::Result<StoreResult<Vec<Msg>>> {
                let (key, seen_after) = match conversation {
                    Conversation::With(other) => {
                        let exists: bool = c.query_row(
                            "SELECT EXISTS(SELECT 1 FROM users WHERE id = ?1)",
                            [other],
                            |r| r.get(0),
                        )?;
                        if !exists {
                            return Ok(Err(StoreError::NotFound("no such user")));
                        }
                        (direct_conv(user, other), 0)
                    }
                    Conversation::Group(group) => {
                        // What a member sees: from its join, unless the group shares
                        // its history with new members.
                        let seen_after: Option<Seq> = c
                            .query_row(
                                "SELECT CASE WHEN g.shared_history THEN 0 ELSE gm.joined_seq END \
                                 FROM group_members gm JOIN chat_groups g ON g.id = gm.group_id \
                                 WHERE gm.group_id = ?1 AND gm.user_id = ?2",
                                [group, user],
                                |r| r.get(0),
                            )
                            .optional()?;
                        let Some(seen_after) = seen_after else {
                            let exists: bool = c.query_row(
                                "SELECT EXISTS(SELECT 1 FROM chat_groups WHERE id = ?1)",
                                [group],
                                |r| r.get(0),
                            )?;
                            return Ok(Err(if exists {
                                StoreError::Forbidden("not a member of that group")
                            } else {
                                StoreError::NotFound("no such group")
                            }));
                        };
                        (group_conv(group), seen_after)
                    }
                };
                let mut stmt = c.prepare_cached(&format!(
                    "{MSG_SELECT} WHERE m.conv = ?1 AND m.seq < {BEFORE_SEQ_SQLITE} \
                     AND m.seq > ?4 ORDER BY m.seq DESC LIMIT ?3"
                ))?;
                let rows = stmt.query_map(params![key, before, limit, seen_after], row_to_msg)?;
                let mut msgs = rows.collect::<rusqlite::Result<Vec<_>>>()?;
                msgs.reverse();
                Ok(Ok(msgs))
            })
            .await?;
        result
    }

    async fn pending(
        &self,
        user: UserId,
        known: &HashMap<ConvId, Seq>,
        since_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<Msg>> {
        // The noted acks first, then the table: a flush that commits in between is then
        // seen in the table (reading the other way round could miss it in both).
        let noted = self.acks.of_user_beside(user, known);
        self.read(move |c| conv::pending_of(c, user, &noted, since_ms, limit))
            .await
    }

    async fn fill(
        &self,
        user: UserId,
        conv: ConvId,
        after: Option<Seq>,
        before: Seq,
        limit: usize,
    ) -> StoreResult<Vec<Msg>> {
        let noted = self.acks.of_user(user).get(&conv).copied().unwrap_or(0);
        self.read(move |c| conv::fill_of(c, user, conv, after, noted, before, limit))
            .await?
    }

    async fn set_admin(&self, name: &str, admin: bool) -> StoreResult<User> {
        let key = crate::names::name_key(name);
        let user = self
            .side_write(move |c| {
                c.query_row(
                    "UPDATE users SET admin = ?2 WHERE name_key = ?1 RETURNING id, name",
                    params![key, admin],
                    |r| {
                        Ok(User {
                            id: r.get(0)?,
                            name: r.get(1)?,
                        })
                    },
                )
                .optional()
            })
            .await?;
        user.ok_or(StoreError::NotFound("no such user"))
    }

    async fn is_admin(&self, user: UserId) -> StoreResult<bool> {
        self.read(move |c| {
            c.prepare_cached("SELECT admin FROM users WHERE id = ?1")?
                .query_row([user], |r| r.get(0))
                .optional()
                .map(|admin| admin.unwrap_or(false))
        })
        .await
    }

    async fn set_muted_until(&self, user: UserId, until_ms: i64) -> StoreResult<()> {
        let changed = self
            .side_write(move |c| {
                c.execute(
                    "UPDATE users SET muted_until = ?2 WHERE id = ?1",
                    params![user, until_ms],
                )
            })
            .await?;
        if changed == 0 {
            return Err(StoreError::NotFound("no such user"));
        }
        Ok(())
    }

    async fn mutes(&self, now_ms: i64) -> StoreResult<Vec<(UserId, i64)>> {
        self.read(move |c| {
            let mut stmt = c.prepare("SELECT id, muted_until FROM users WHERE muted_until > ?1")?;
            let rows = stmt.query_map([now_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    async fn group_kick(&self, group: GroupId, by: UserId, member: UserId) -> StoreResult<()> {
        self.write(|reply| Write::GroupKick {
            group,
            by,
            member,
            reply,
        })
        .await
    }

    async fn purge_history(&self, before_ms: i64, chunk: usize) -> StoreResult<u64> {
        let chunk = chunk as i64;
        let deleted = self
            .side_write(move |c| {
                c.execute(
                    "DELETE FROM messages WHERE id IN \
                     (SELECT id FROM messages WHERE ts < ?1 ORDER BY ts LIMIT ?2)",
                    params![before_ms, chunk],
                )
            })
            .await?;
        Ok(deleted as u64)
    }

    async fn ack(&self, user: UserId, conv: ConvId, seq: Seq) -> StoreResult<()> {
        if self.writes.is_closed() {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        self.acks.note(user, conv, seq);
        Ok(())
    }

    async fn mark_read(&self, user: UserId, conv: ConvId, seq: Seq) -> StoreResult<ReadMark> {
        self.write(|reply| Write::MarkRead {
            user,
            conv,
            seq,
            reply,
        })
        .await
    }

    async fn conversations(
        &self,
        user: UserId,
        before: Option<MsgId>,
        limit: usize,
    ) -> StoreResult<Vec<(MsgId, ConvSummary)>> {
        let before = before.unwrap_or(MsgId::MAX);
        self.read(move |c| conv::conversations_of(c, user, before, limit))
            .await
    }

    async fn conv_peers(
        &self,
        user: UserId,
        conv: ConvId,
    ) -> StoreResult<(Option<GroupId>, Vec<UserId>)> {
        self.read(move |c| Ok(conv::peers_of(c, user, conv)))
            .await?
    }

    async fn sync(
        &self,
        user: UserId,
        positions: &[ConvPos],
        limit: usize,
    ) -> StoreResult<(Vec<Msg>, bool)> {
        let positions = positions.to_vec();
        self.read(move |c| conv::sync_of(c, user, &positions, limit))
            .await
    }

    async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writes.send(Write::Close { reply: tx }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many reads at once are batched by the reader threads; each must still get its own
    /// answer, and see every write committed before it asked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_each_get_their_own_answer() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _log) =
            SqliteStore::open(&dir.path().join("t.db"), Durability::Normal).unwrap();
        let store = Arc::new(store);
        let mut users = Vec::new();
        for i in 0..300 {
            users.push(
                store
                    .create_user(&format!("u{i}"), &format!("h{i}"))
                    .await
                    .unwrap(),
            );
        }
        let reads = users.iter().map(|user| {
            let (store, user) = (store.clone(), user.clone());
            tokio::spawn(async move {
                let found = store.credentials_by_id(user.id).await.unwrap().unwrap();
                assert_eq!(found.user.id, user.id);
                assert_eq!(found.user.name, user.name);
                assert_eq!(found.password_hash, format!("h{}", &user.name[1..]));
            })
        });
        for read in futures::future::join_all(reads).await {
            read.unwrap();
        }
        assert!(store.credentials_by_name("nobody").await.unwrap().is_none());
    }

    /// A store made before ids were kept from reuse, in which a deleted group's id went to
    /// a new group: the migration removes what the deleted group left behind, and the
    /// next group gets an id never used.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_migration_repairs_a_reused_group_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0].1).unwrap();
            conn.execute_batch(MIGRATIONS[1].1).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL);
                 INSERT INTO schema_migrations VALUES (1, 0), (2, 0);
                 INSERT INTO users (id, name, password_hash, created_ms) VALUES (1, 'a', 'h', 0), (2, 'b', 'h', 0);
                 -- Group 7 was deleted after message 1; its id was given to a new group at id 2.
                 INSERT INTO messages (id, ts, from_user, group_id, text) VALUES (1, 0, 1, 7, 'old secret');
                 INSERT INTO chat_groups (id, name, description, creator, created_ms) VALUES (7, 'new', '', 2, 0);
                 INSERT INTO group_members VALUES (7, 2, 'creator', 1);
                 INSERT INTO messages (id, ts, from_user, group_id, text) VALUES (2, 0, 2, 7, 'new text');
                 -- Group 9 was deleted and its id not reused yet.
                 INSERT INTO messages (id, ts, from_user, group_id, text) VALUES (3, 0, 1, 9, 'orphan');
                 UPDATE log_position SET last_msg_id = 3;",
            )
            .unwrap();
        }
        let (store, _log) = SqliteStore::open(&path, Durability::Normal).unwrap();
        let b = store.user(2).await.unwrap().unwrap();
        let history = store
            .history(2, Conversation::Group(7), None, 100)
            .await
            .unwrap();
        let texts: Vec<&str> = history.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, vec!["new text"]);
        let left: i64 = store
            .read(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM messages WHERE group_id = 9",
                    [],
                    |r| r.get(0),
                )
            })
            .await
            .unwrap();
        assert_eq!(left, 0, "the deleted group's messages are gone");
        // Group 9's id is never given out again, nor 7's.
        let group = store
            .create_group(b.id, "next", "", GroupSettings::default())
            .await
            .unwrap();
        assert_eq!(group.id, 10);
        store.close().await;
    }
}
