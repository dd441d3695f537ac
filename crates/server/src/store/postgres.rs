//! The shared store: PostgreSQL, for one node or the several nodes of a cluster.
//!
//! The same design as the SQLite store, over the network. Writes go through one writer
//! task per node on a dedicated connection: it takes whatever is queued (up to
//! [`MAX_BATCH`] writes), runs it all in one transaction and commits once. Only after the
//! commit does each caller get its answer and the [`CommitLog`] its [`CommitBatch`].
//!
//! No lock is shared by the nodes. Message ids come from the sequence `message_ids`,
//! which hands each connection a block of 1,000 at a time: unique, never reused, but
//! not in commit order across nodes. Order lives in each conversation: a batch locks the
//! rows of the conversations it writes to (see [`conv`]), so only writers to the same
//! conversation wait on each other, and seqs follow commit order.
//!
//! Reads run on a small pool. Nothing waits for PostgreSQL without a bound: connecting,
//! each read and each batch have deadlines, and a server-side `statement_timeout` backs
//! them, so when PostgreSQL is unreachable or stuck an operation fails with
//! [`StoreError::Unavailable`] within seconds, and nothing is acknowledged that was not
//! committed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chat_proto::types::{ConvPos, ConvSummary, Invite, Msg, Role, User};
use chat_proto::{ConvId, GroupId, MsgId, Seq, UserId};
use deadpool_postgres::{ClientWrapper, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, SimpleQueryMessage, Statement};

use super::writes::{fail, finisher, AckMap, Finisher, PendingAcks, Reply, Write};
use super::{
    direct_conv, group_conv, Befriended, Commit, CommitBatch, CommitLog, Conversation, Credentials,
    GroupRow, GroupSettings, GroupWithMembers, GroupsPage, ReadMark, Snapshot, Store, StoreError,
    StoreResult,
};

mod consent;
mod conv;

use consent::in_tx;

/// The most writes one transaction takes.
const MAX_BATCH: usize = 4096;
/// How many writes may wait for the writer before callers wait too.
const WRITE_QUEUE: usize = 16 * 1024;
/// How many read connections a node keeps.
const READERS: usize = 8;
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one read (a pooled connection and its queries) may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one write batch, from BEGIN to COMMIT, may take.
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for its write: the queue ahead of it, then its batch.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// PostgreSQL cancels a statement that runs longer (backs the client-side deadlines).
const STATEMENT_TIMEOUT_MS: u64 = 5_000;
/// PostgreSQL ends a session that sits in an open transaction longer: a node that hangs
/// mid-batch cannot keep the message-id lock from the rest of the cluster.
const IDLE_IN_TRANSACTION_MS: u64 = 10_000;
/// Migrations may take longer than a statement of a running server.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);
/// How often acks noted in memory are written.
const ACK_FLUSH_EVERY: Duration = Duration::from_millis(250);

/// The versioned schema, applied in order on start.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (
        2,
        include_str!("../../migrations/postgres/0002_admin_expiry.sql"),
    ),
    (
        3,
        include_str!("../../migrations/postgres/0003_ids_never_reused.sql"),
    ),
    (
        5,
        include_str!("../../migrations/postgres/0005_conversations.sql"),
    ),
    (
        6,
        include_str!("../../migrations/postgres/0006_message_ids.sql"),
    ),
    (
        8,
        include_str!("../../migrations/postgres/0008_consent.sql"),
    ),
    (
        9,
        include_str!("../../migrations/postgres/0009_name_keys.sql"),
    ),
];

/// Gives every user without a name key its key (see the migration `0009_name_keys`).
async fn fill_name_keys(client: &mut Client) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let users = tx
        .query(
            "SELECT id, name FROM users WHERE name_key IS NULL ORDER BY id",
            &[],
        )
        .await?;
    for row in users {
        let (id, name): (UserId, String) = (row.try_get(0)?, row.try_get(1)?);
        let key = crate::names::name_key(&name);
        let taken = tx
            .query_opt(
                "SELECT 1 FROM users WHERE name_key = $1 AND id <> $2",
                &[&key, &id],
            )
            .await?
            .is_some();
        let key = if taken {
            tracing::warn!(
                user = id,
                "a user's name looks like another's; it keeps its own key"
            );
            format!("{key}#{id}")
        } else {
            key
        };
        tx.execute("UPDATE users SET name_key = $2 WHERE id = $1", &[&id, &key])
            .await?;
    }
    tx.commit().await
}

/// Serialises migrations of one schema between nodes (a session-level lock, at start only).
const LOCK_MIGRATIONS: &str =
    "SELECT pg_advisory_lock(hashtext('chatd.migrate'), hashtext(current_schema()))";
const UNLOCK_MIGRATIONS: &str =
    "SELECT pg_advisory_unlock(hashtext('chatd.migrate'), hashtext(current_schema()))";
/// How many message ids a writer takes at most per batch (one per write).
const IDS_PER_WRITE: usize = 1;

/// A history page ends before message `$2`: before its seq in conversation `$1` (ids do not
/// follow seqs across nodes); for an id not in the conversation, before the
/// conversation's messages with smaller ids.
const BEFORE_SEQ_PG: &str = "(CASE WHEN $2 = 9223372036854775807 THEN 9223372036854775807 ELSE \
     COALESCE((SELECT seq FROM messages WHERE id = $2 AND conv = $1), \
     (SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE conv = $1 AND id < $2)) END)";

const MSG_SELECT: &str = "SELECT m.id, m.ts, m.from_user, u.name, m.text, m.to_user, m.group_id, \
                          m.conv, m.seq FROM messages m JOIN users u ON u.id = m.from_user";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn role_of(text: &str) -> Role {
    Role::parse(text).unwrap_or(Role::Member)
}

/// PostgreSQL's text cannot hold NUL, which JSON strings can (message texts are stored as
/// UTF-8 bytes for that reason); a group description with one is refused alone rather
/// than failing its whole batch.
const NUL_IN_TEXT: StoreError = StoreError::Forbidden("text must not contain NUL characters");

/// Maps a PostgreSQL error: the network and an overloaded or restarting server are
/// `Unavailable` (try again later), anything else is `Internal`. The detail is for the log.
impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        let transient = match e.code() {
            Some(code) => {
                let code = code.code();
                // 08: connection exception; 53: insufficient resources; 57: operator
                // intervention (shutdown, statement_timeout); 40: serialization failure and
                // deadlock.
                ["08", "53", "57", "40"]
                    .iter()
                    .any(|class| code.starts_with(class))
                    || e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
            }
            None => {
                e.is_closed()
                    || std::error::Error::source(&e)
                        .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
            }
        };
        if transient {
            StoreError::Unavailable(detail(&e))
        } else {
            StoreError::Internal(detail(&e))
        }
    }
}

/// What went wrong, in PostgreSQL's words when it said something ("database \"x\" does
/// not exist"): tokio-postgres's own text for a server error is only "db error".
fn detail(e: &tokio_postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        (None, Some(source)) => format!("{e}: {source}"),
        (None, None) => e.to_string(),
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => e.into(),
        other => StoreError::Unavailable(other.to_string()),
    }
}

fn row_to_msg(row: &Row) -> StoreResult<Msg> {
    let text: Vec<u8> = row.try_get(4)?;
    Ok(Msg {
        id: row.try_get(0)?,
        ts: row.try_get(1)?,
        from: row.try_get(2)?,
        from_name: row.try_get(3)?,
        text: String::from_utf8(text)
            .map_err(|_| StoreError::Internal("a stored message text is not UTF-8".into()))?,
        to: row.try_get(5)?,
        group: row.try_get(6)?,
        conv: row.try_get(7)?,
        seq: row.try_get(8)?,
    })
}

fn row_to_user(row: &Row) -> Result<User, tokio_postgres::Error> {
    Ok(User {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
    })
}

/// A group from `id, name, description, open, shared_history`.
fn row_to_group(row: &Row) -> Result<GroupRow, tokio_postgres::Error> {
    Ok(GroupRow {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        desc: row.try_get(2)?,
        settings: GroupSettings {
            open: row.try_get(3)?,
            shared_history: row.try_get(4)?,
        },
    })
}

/// The connection settings of `url`, with this store's bounds added: a connect timeout,
/// and server-side statement and idle-in-transaction timeouts (settings in the URL's own
/// `options` come after ours, so they win).
fn pg_config(url: &str) -> StoreResult<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Internal(format!("bad PostgreSQL URL: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("chatd");
    }
    let ours = format!(
        "-c statement_timeout={STATEMENT_TIMEOUT_MS} \
         -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"
    );
    let options = match config.get_options() {
        Some(theirs) => format!("{ours} {theirs}"),
        None => ours,
    };
    config.options(&options);
    config.keepalives_idle(Duration::from_secs(10));
    Ok(config)
}

/// Opens one connection and runs its I/O on its own task.
async fn connect(config: &tokio_postgres::Config) -> StoreResult<Client> {
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| StoreError::Unavailable("connecting to PostgreSQL timed out".into()))??;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "store: a PostgreSQL connection failed");
        }
    });
    Ok(client)
}

/// Runs `work` under `limit`; past it, `Unavailable` with `what` timed out.
async fn timed<T>(
    limit: Duration,
    what: &str,
    work: impl Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| StoreError::Unavailable(format!("{what} timed out")))?
}

/// Applies the migrations not applied yet, under a session advisory lock so that nodes
/// starting at once apply each exactly once; each migration in its own transaction.
async fn migrate(config: &tokio_postgres::Config) -> StoreResult<()> {
    let mut client = connect(config).await?;
    timed(MIGRATION_TIMEOUT, "migrating the schema", async {
        client
            .batch_execute("SET statement_timeout = '60s'")
            .await?;
        let schema: Option<String> = client
            .query_one("SELECT current_schema()", &[])
            .await?
            .try_get(0)?;
        if schema.is_none() {
            return Err(StoreError::Internal(
                "no schema to create tables in: check search_path".into(),
            ));
        }
        client.execute(LOCK_MIGRATIONS, &[]).await?;
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations \
                 (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
            )
            .await?;
        for (version, sql) in MIGRATIONS {
            let tx = client.transaction().await?;
            let applied: bool = tx
                .query_one(
                    "SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE version = $1)",
                    &[version],
                )
                .await?
                .try_get(0)?;
            if !applied {
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_ms) VALUES ($1, $2)",
                    &[version, &now_ms()],
                )
                .await?;
                tracing::info!(version, "applied migration");
            }
            tx.commit().await?;
        }
        fill_name_keys(&mut client).await?;
        client.execute(UNLOCK_MIGRATIONS, &[]).await?;
        Ok(())
    })
    .await
    // On an error the connection closes here, which releases the lock.
}

/// Asks the writer to write the noted acks every [`ACK_FLUSH_EVERY`], until the store is
/// dropped or closed.
async fn flush_acks(writes: mpsc::WeakSender<Write>, acks: Arc<PendingAcks>) {
    let mut tick = tokio::time::interval(ACK_FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(writes) = writes.upgrade() else {
            return;
        };
        if writes.is_closed() {
            return;
        }
        if !acks.is_empty() {
            // A full queue means a batch is coming anyway; it need not carry the flush.
            let _ = writes.try_send(Write::FlushAcks);
        }
    }
}

/// The PostgreSQL store.
pub struct PgStore {
    writes: mpsc::Sender<Write>,
    /// Acks not yet written; the writer folds them in every [`ACK_FLUSH_EVERY`].
    acks: Arc<PendingAcks>,
    reads: Pool,
}

impl PgStore {
    /// Connects to the database at `url` (a `postgres://` URL; `options=-c search_path=...`
    /// picks a schema), applies the migrations it lacks, and starts the writer task.
    /// Returns the store and its commit log.
    pub async fn open(url: &str) -> StoreResult<(PgStore, CommitLog)> {
        let config = pg_config(url)?;
        migrate(&config).await?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let reads = Pool::builder(manager)
            .max_size(READERS)
            .wait_timeout(Some(READ_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let (write_tx, write_rx) = mpsc::channel(WRITE_QUEUE);
        let (commit_tx, commit_rx) = mpsc::channel(WRITE_QUEUE);
        let acks = Arc::new(PendingAcks::default());
        let writer = Writer {
            config,
            conn: None,
            last_ts: 0,
            known_users: HashSet::new(),
            commits: commit_tx,
            acks: acks.clone(),
        };
        tokio::spawn(writer.run(write_rx));
        tokio::spawn(flush_acks(write_tx.downgrade(), acks.clone()));
        Ok((
            PgStore {
                writes: write_tx,
                acks,
                reads,
            },
            commit_rx,
        ))
    }

    async fn write<T>(&self, make: impl FnOnce(Reply<T>) -> Write) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel();
        timed(WRITE_TIMEOUT, "a write to PostgreSQL", async {
            self.writes
                .send(make(tx))
                .await
                .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
            rx.await
                .map_err(|_| StoreError::Unavailable("the write was not committed".into()))?
        })
        .await
    }

    /// Runs `f` on a pooled connection, all of it under [`READ_TIMEOUT`].
    async fn read<T, F, Fut>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        timed(READ_TIMEOUT, "a read from PostgreSQL", async {
            let client = self.reads.get().await.map_err(pool_error)?;
            f(client).await
        })
        .await
    }
}

async fn admin_of(c: &ClientWrapper, user: UserId) -> StoreResult<bool> {
    Ok(
        opt_row(c, "SELECT admin FROM users WHERE id = $1", &[&user])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?
            .unwrap_or(false),
    )
}

/// Runs a cached statement on a pooled connection.
async fn rows(
    c: &ClientWrapper,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Vec<Row>> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query(&stmt, params).await?)
}

/// Runs a cached statement that returns at most one row.
async fn opt_row(
    c: &ClientWrapper,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Option<Row>> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&stmt, params).await?)
}

async fn exists(c: &ClientWrapper, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<bool> {
    Ok(opt_row(c, sql, params).await?.is_some())
}

async fn credentials(
    c: &ClientWrapper,
    sql: &str,
    key: &(dyn ToSql + Sync),
) -> StoreResult<Option<Credentials>> {
    let Some(row) = opt_row(c, sql, &[key]).await? else {
        return Ok(None);
    };
    Ok(Some(Credentials {
        user: row_to_user(&row)?,
        password_hash: row.try_get(2)?,
    }))
}

async fn friends_of(c: &ClientWrapper, user: UserId) -> StoreResult<Vec<User>> {
    let rows = rows(
        c,
        "SELECT u.id, u.name FROM friends f JOIN users u ON u.id = f.friend_id \
         WHERE f.user_id = $1 ORDER BY u.id",
        &[&user],
    )
    .await?;
    Ok(rows.iter().map(row_to_user).collect::<Result<_, _>>()?)
}

/// Members with their roles: the creator first, then by id.
async fn members_with_roles(c: &ClientWrapper, group: GroupId) -> StoreResult<Vec<(User, Role)>> {
    let rows = rows(
        c,
        "SELECT u.id, u.name, gm.role FROM group_members gm JOIN users u ON u.id = gm.user_id \
         WHERE gm.group_id = $1 ORDER BY gm.role = 'member', u.id",
        &[&group],
    )
    .await?;
    rows.iter()
        .map(|r| -> StoreResult<(User, Role)> {
            let role: String = r.try_get(2)?;
            Ok((row_to_user(r)?, role_of(&role)))
        })
        .collect()
}

/// A page of the user's groups, each with its first members, in two queries.
async fn groups_of(
    c: &ClientWrapper,
    user: UserId,
    page: GroupsPage,
) -> StoreResult<Vec<GroupWithMembers>> {
    let (after, limit, per_group) = (page.after, page.limit as i64, page.members as i64);
    let mine = rows(
        c,
        "SELECT g.id, g.name, g.description, g.open, g.shared_history, gm.role, \
         (SELECT COUNT(*) FROM group_members n WHERE n.group_id = g.id) \
         FROM group_members gm JOIN chat_groups g ON g.id = gm.group_id \
         WHERE gm.user_id = $1 AND gm.group_id > $2 ORDER BY gm.group_id LIMIT $3",
        &[&user, &after, &limit],
    )
    .await?;
    if mine.is_empty() {
        return Ok(Vec::new());
    }
    let mut groups = Vec::with_capacity(mine.len());
    for row in &mine {
        let role: String = row.try_get(5)?;
        groups.push(GroupWithMembers {
            group: row_to_group(row)?,
            role: role_of(&role),
            member_count: row.try_get(6)?,
            members: Vec::new(),
        });
    }
    let ids: Vec<GroupId> = groups.iter().map(|g| g.group.id).collect();
    // The first members of each group, each read on the primary key.
    let members = rows(
        c,
        "SELECT g.id, u.id, u.name, m.role FROM unnest($1::bigint[]) AS g(id) \
         CROSS JOIN LATERAL (SELECT user_id, role FROM group_members \
           WHERE group_id = g.id ORDER BY user_id LIMIT $2) m \
         JOIN users u ON u.id = m.user_id ORDER BY g.id, u.id",
        &[&ids, &per_group],
    )
    .await?;
    let mut by_group: HashMap<GroupId, Vec<(User, Role)>> = HashMap::new();
    for row in &members {
        let group: GroupId = row.try_get(0)?;
        let role: String = row.try_get(3)?;
        let member = User {
            id: row.try_get(1)?,
            name: row.try_get(2)?,
        };
        by_group
            .entry(group)
            .or_default()
            .push((member, role_of(&role)));
    }
    for group in &mut groups {
        group.members = by_group.remove(&group.group.id).unwrap_or_default();
    }
    Ok(groups)
}

/// Messages pending for `user` above `after`: one-to-one ones, and those of each of its
/// groups above both `after` and the id at which it joined, not its own; oldest first.
/// The writer's connection and its prepared statements.
struct WriterConn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

/// What one batch has done so far.
#[derive(Default)]
struct Batch {
    finishers: Vec<Finisher>,
    commits: Vec<Commit>,
    /// Messages given ids, inserted together before COMMIT.
    messages: Vec<Arc<Msg>>,
    /// The last message id before this batch, read under the lock.
    after: MsgId,
    /// The last id given out so far (`after` while none).
    last: MsgId,
    /// Memberships looked up in this batch; forgotten when one changes.
    members: HashMap<(GroupId, UserId), bool>,
    /// The last seq per conversation this batch has locked or written: read (and the row
    /// locked) at a conversation's first message in the batch.
    seqs: HashMap<ConvId, Seq>,
    /// Client message ids of this batch's messages: (user, cmid) -> message.
    cmids: HashMap<(UserId, String), Arc<Msg>>,
    /// Message ids reserved for this batch, in increasing order.
    ids: VecDeque<MsgId>,
}

impl Batch {
    /// Takes the next message id of those reserved for this batch: for a message, or for
    /// a membership change (which has an id of its own, with no message under it).
    fn next_id(&mut self) -> MsgId {
        let id = self.ids.pop_front().unwrap_or(self.last + 1);
        self.last = self.last.max(id);
        id
    }
}

/// Runs a multi-statement write inside a savepoint, so that it applies whole or not at
/// all and its failure leaves the rest of the batch going. The savepoint commands
/// failing means the transaction is lost: that returns from the enclosing function.
macro_rules! savepoint {
    ($writer:expr, $op:expr) => {{
        $writer.simple("SAVEPOINT op").await?;
        let result = $op.await;
        $writer
            .simple(if result.is_ok() {
                "RELEASE SAVEPOINT op"
            } else {
                "ROLLBACK TO SAVEPOINT op; RELEASE SAVEPOINT op"
            })
            .await?;
        result
    }};
}

/// The writer task's state.
struct Writer {
    config: tokio_postgres::Config,
    /// `None` until connected, and again after a failure left it in doubt.
    conn: Option<WriterConn>,
    last_ts: i64,
    /// Users known to exist (users are never deleted), to skip a lookup per message.
    known_users: HashSet<UserId>,
    commits: mpsc::Sender<CommitBatch>,
    acks: Arc<PendingAcks>,
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<Write>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
            if let Some(reply) = self.apply(&mut batch).await {
                let _ = reply.send(());
                return;
            }
        }
    }

    /// Runs one batch in one transaction. Returns the close request, if the batch had one.
    async fn apply(&mut self, batch: &mut Vec<Write>) -> Option<oneshot::Sender<()>> {
        let mut ops = VecDeque::with_capacity(batch.len());
        let mut close = None;
        let mut flush_acks = false;
        for write in batch.drain(..) {
            match write {
                Write::FlushAcks => flush_acks = true,
                Write::Close { reply } => {
                    flush_acks = true;
                    close = Some(reply);
                }
                other => ops.push_back(other),
            }
        }
        let acks = if flush_acks {
            self.acks.snapshot()
        } else {
            AckMap::new()
        };
        if ops.is_empty() && acks.is_empty() {
            return close;
        }
        let mut done = Batch::default();
        let outcome = timed(
            BATCH_TIMEOUT,
            "a write batch",
            self.transact(&mut ops, &acks, &mut done),
        )
        .await;
        match outcome {
            Ok(()) => {
                self.acks.forget(&acks);
                // Announce before answering, so that a message is on its way to its
                // recipients no later than its sender hears it is stored.
                if !done.commits.is_empty() {
                    let batch = CommitBatch {
                        after: done.after,
                        last: done.last,
                        commits: done.commits,
                    };
                    let _ = self.commits.send(batch).await;
                }
                for finish in done.finishers {
                    finish(None);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store: a write batch failed");
                // A statement may be in flight: drop the connection, and with it the
                // transaction (the server rolls it back); the next batch reconnects.
                self.conn = None;
                self.known_users.clear();
                for finish in done.finishers {
                    finish(Some(&e));
                }
                for write in ops {
                    fail(write, &e);
                }
            }
        }
        close
    }

    /// BEGIN, every write, the messages, the acks, COMMIT. An error here fails the whole
    /// batch; an op's own failure (a savepoint rolled back) does not.
    async fn transact(
        &mut self,
        ops: &mut VecDeque<Write>,
        acks: &AckMap,
        done: &mut Batch,
    ) -> StoreResult<()> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let client = connect(&self.config).await?;
            self.conn = Some(WriterConn {
                client,
                statements: HashMap::new(),
            });
        }
        if ops.is_empty() {
            self.simple("BEGIN").await?;
        } else {
            done.ids = self.begin_write(ops.len() * IDS_PER_WRITE).await?;
            done.after = done.ids.front().map_or(0, |id| id - 1);
            done.last = done.after;
            self.lock_conversations(ops, done).await?;
        }
        while let Some(write) = ops.pop_front() {
            self.apply_one(write, done).await?;
        }
        if !done.messages.is_empty() {
            self.insert_messages(&done.messages).await?;
            self.write_cmids(&done.cmids).await?;
        }
        if !acks.is_empty() {
            self.write_acks(acks).await?;
        }
        self.simple("COMMIT").await
    }

    fn conn(&mut self) -> StoreResult<&mut WriterConn> {
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("no connection to PostgreSQL".into()))
    }

    /// Runs commands with the simple protocol.
    async fn simple(&mut self, sql: &str) -> StoreResult<()> {
        Ok(self.conn()?.client.batch_execute(sql).await?)
    }

    async fn statement(&mut self, sql: &'static str) -> StoreResult<Statement> {
        let conn = self.conn()?;
        if let Some(stmt) = conn.statements.get(sql) {
            return Ok(stmt.clone());
        }
        let stmt = conn.client.prepare(sql).await?;
        conn.statements.insert(sql, stmt.clone());
        Ok(stmt)
    }

    async fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> StoreResult<Vec<Row>> {
        let stmt = self.statement(sql).await?;
        Ok(self.conn()?.client.query(&stmt, params).await?)
    }

    async fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> StoreResult<Option<Row>> {
        let stmt = self.statement(sql).await?;
        Ok(self.conn()?.client.query_opt(&stmt, params).await?)
    }

    async fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> StoreResult<u64> {
        let stmt = self.statement(sql).await?;
        Ok(self.conn()?.client.execute(&stmt, params).await?)
    }

    /// BEGIN, and `n` message ids from the sequence `message_ids`, in one round trip.
    /// No lock: the sequence hands each connection a block of 1,000 ids at a time, so a
    /// node touches the shared counter once per 1,000 ids, and ids are unique but do not
    /// follow commit order across nodes (seqs do, per conversation).
    async fn begin_write(&mut self, n: usize) -> StoreResult<VecDeque<MsgId>> {
        let sql = format!(
            "BEGIN; SELECT array_to_string(ARRAY(SELECT nextval('message_ids') \
             FROM generate_series(1, {n})), ',')"
        );
        let replies = self.conn()?.client.simple_query(&sql).await?;
        let text = replies
            .iter()
            .find_map(|reply| match reply {
                SimpleQueryMessage::Row(row) => row.try_get(0).ok().flatten(),
                _ => None,
            })
            .ok_or_else(|| StoreError::Internal("no message ids".into()))?;
        text.split(',')
            .map(|id| {
                id.parse()
                    .map_err(|_| StoreError::Internal("a message id is not a number".into()))
            })
            .collect()
    }

    async fn insert_messages(&mut self, msgs: &[Arc<Msg>]) -> StoreResult<()> {
        let n = msgs.len();
        let (mut ids, mut ts, mut from) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut to, mut group, mut conv, mut seq, mut text) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for m in msgs {
            ids.push(m.id);
            ts.push(m.ts);
            from.push(m.from);
            to.push(m.to);
            group.push(m.group);
            conv.push(m.conv);
            seq.push(m.seq);
            text.push(m.text.as_bytes());
        }
        // The messages, and each conversation's new last seq and activity: one statement.
        self.execute(
            "WITH m AS (INSERT INTO messages \
               (id, ts, from_user, to_user, group_id, conv, seq, text) \
               SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], \
               $5::bigint[], $6::bigint[], $7::bigint[], $8::bytea[]) \
               RETURNING conv, seq, id, ts) \
             UPDATE conversations c SET last_seq = t.seq, last_msg_id = t.id, last_ts = t.ts \
             FROM (SELECT DISTINCT ON (conv) conv, seq, id, ts FROM m ORDER BY conv, seq DESC) t \
             WHERE c.id = t.conv",
            &[&ids, &ts, &from, &to, &group, &conv, &seq, &text],
        )
        .await?;
        Ok(())
    }

    /// Applies one write, pushing its answer. An error return fails the whole batch.
    async fn apply_one(&mut self, write: Write, done: &mut Batch) -> StoreResult<()> {
        match write {
            Write::CreateUser { name, hash, reply } => {
                let result = savepoint!(self, self.create_user(&name, &hash));
                done.finishers.push(finisher(reply, result));
            }
            Write::CreateToken {
                user,
                hash,
                expires_ms,
                reply,
            } => {
                let result = savepoint!(
                    self,
                    self.execute(
                        "INSERT INTO tokens (hash, user_id, expires_ms) VALUES ($1, $2, $3)",
                        &[&hash, &user, &expires_ms],
                    )
                )
                .map(|_| ());
                done.finishers.push(finisher(reply, result));
            }
            Write::DeleteToken { hash, reply } => {
                let result = savepoint!(
                    self,
                    self.execute("DELETE FROM tokens WHERE hash = $1", &[&hash])
                )
                .map(|_| ());
                done.finishers.push(finisher(reply, result));
            }
            Write::CreateGroup {
                creator,
                name,
                desc,
                settings,
                reply,
            } => {
                let at = done.next_id();
                let result = savepoint!(
                    self,
                    self.create_group(creator, &name, &desc, settings, at, at)
                );
                if let Ok(group) = &result {
                    done.members.clear();
                    done.commits.push(Commit::Joined {
                        group: group.id,
                        user: creator,
                        seq: 0,
                    });
                }
                done.finishers.push(finisher(reply, result));
            }
            Write::JoinGroup { group, user, reply } => {
                let seq = match done.seqs.get(&group_conv(group)) {
                    Some(seq) => *seq,
                    None => self
                        .query_opt(
                            "SELECT last_seq FROM conversations WHERE id = $1",
                            &[&group_conv(group)],
                        )
                        .await?
                        .map(|r| r.try_get(0))
                        .transpose()?
                        .unwrap_or(0),
                };
                let at = done.next_id();
                let result = savepoint!(self, self.join_group(group, user, at, Some(seq)));
                if result.is_ok() {
                    done.members.clear();
                    done.commits.push(Commit::Joined { group, user, seq });
                }
                done.finishers.push(finisher(reply, result));
            }
            Write::LeaveGroup { group, user, reply } => {
                let result = savepoint!(self, self.leave_group(group, user));
                if result.is_ok() {
                    done.members.clear();
                    let at = done.next_id();
                    done.commits.push(Commit::Left { group, user, at });
                }
                done.finishers.push(finisher(reply, result));
            }
            Write::GroupKick {
                group,
                by,
                member,
                reply,
            } => {
                let result = savepoint!(self, self.group_kick(group, by, member));
                if result.is_ok() {
                    done.members.clear();
                    let at = done.next_id();
                    done.commits.push(Commit::Left {
                        group,
                        user: member,
                        at,
                    });
                }
                done.finishers.push(finisher(reply, result));
            }
            Write::DeleteGroup { group, user, reply } => {
                let result = savepoint!(self, self.delete_group(group, user));
                if result.is_ok() {
                    done.members.clear();
                    let at = done.next_id();
                    done.commits.push(Commit::GroupDeleted { group, at });
                }
                done.finishers.push(finisher(reply, result));
            }
            // Messages need no savepoint: their checks only read, and the rows are
            // inserted together at the end of the batch.
            Write::Send {
                from,
                to,
                text,
                cmid,
                reply,
            } => {
                let result = if let Some(first) = self.resend(&done.cmids, from.id, &cmid).await? {
                    Ok(first)
                } else if !self.user_exists(to).await? {
                    Err(StoreError::NotFound("no such user"))
                } else {
                    let conv = direct_conv(from.id, to);
                    self.stamp(done, from, Some(to), None, conv, text, cmid)
                        .await
                };
                done.finishers.push(finisher(reply, result));
            }
            Write::MarkRead {
                user,
                conv,
                seq,
                reply,
            } => {
                let result = savepoint!(self, self.mark_read(done, user, conv, seq));
                done.finishers.push(finisher(reply, result));
            }
            Write::GroupSend {
                from,
                group,
                text,
                cmid,
                reply,
            } => {
                if let Some(first) = self.resend(&done.cmids, from.id, &cmid).await? {
                    done.finishers.push(finisher(reply, Ok(first)));
                    return Ok(());
                }
                let member = match done.members.get(&(group, from.id)) {
                    Some(member) => *member,
                    None => {
                        let member = self.role(group, from.id).await?.is_some();
                        done.members.insert((group, from.id), member);
                        member
                    }
                };
                let result = if !member {
                    Err(match self.group_row(group).await? {
                        None => StoreError::NotFound("no such group"),
                        Some(_) => StoreError::Forbidden("not a member of that group"),
                    })
                } else {
                    let conv = group_conv(group);
                    self.stamp(done, from, None, Some(group), conv, text, cmid)
                        .await
                };
                done.finishers.push(finisher(reply, result));
            }
            Write::FlushAcks | Write::Close { .. } => {}
        }
        Ok(())
    }

    /// Gives a message the next id, a timestamp and the next seq of its conversation
    /// (locking the conversation's row at its first message in the batch), and queues its
    /// row and its commit.
    #[allow(clippy::too_many_arguments)]
    async fn stamp(
        &mut self,
        done: &mut Batch,
        from: User,
        to: Option<UserId>,
        group: Option<GroupId>,
        conv: ConvId,
        text: String,
        cmid: Option<String>,
    ) -> StoreResult<Arc<Msg>> {
        let seq = self.conv_seq(done, conv).await? + 1;
        done.seqs.insert(conv, seq);
        let id = done.next_id();
        self.last_ts = self.last_ts.max(now_ms());
        let msg = Arc::new(Msg {
            id,
            ts: self.last_ts,
            from: from.id,
            from_name: from.name,
            text,
            to,
            group,
            conv,
            seq,
        });
        if let Some(cmid) = cmid {
            done.cmids.insert((msg.from, cmid), msg.clone());
        }
        done.messages.push(msg.clone());
        done.commits.push(Commit::Msg(msg.clone()));
        Ok(msg)
    }

    async fn user_exists(&mut self, id: UserId) -> StoreResult<bool> {
        if self.known_users.contains(&id) {
            return Ok(true);
        }
        let exists = self
            .query_opt("SELECT 1 FROM users WHERE id = $1", &[&id])
            .await?
            .is_some();
        if exists {
            self.known_users.insert(id);
        }
        Ok(exists)
    }

    async fn create_user(&mut self, name: &str, hash: &str) -> StoreResult<User> {
        let row = self
            .query_opt(
                "INSERT INTO users (name, name_key, password_hash, created_ms) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING id",
                &[&name, &crate::names::name_key(name), &hash, &now_ms()],
            )
            .await?;
        let Some(row) = row else {
            return Err(StoreError::Conflict("that name is taken"));
        };
        let id: UserId = row.try_get(0)?;
        self.known_users.insert(id);
        Ok(User {
            id,
            name: name.to_string(),
        })
    }

    /// Creates a group, its conversation (last activity `at`) and the creator's membership.
    async fn create_group(
        &mut self,
        creator: UserId,
        name: &str,
        desc: &str,
        settings: GroupSettings,
        joined_after: MsgId,
        at: MsgId,
    ) -> StoreResult<GroupRow> {
        if name.contains('\0') || desc.contains('\0') {
            return Err(NUL_IN_TEXT);
        }
        let row = self
            .query_opt(
                "INSERT INTO chat_groups \
                 (name, description, creator, created_ms, open, shared_history) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[
                    &name,
                    &desc,
                    &creator,
                    &now_ms(),
                    &settings.open,
                    &settings.shared_history,
                ],
            )
            .await?
            .ok_or_else(|| StoreError::Internal("INSERT returned no id".into()))?;
        let id: GroupId = row.try_get(0)?;
        self.execute(
            "INSERT INTO group_members (group_id, user_id, role, joined_after, joined_seq) \
             VALUES ($1, $2, 'creator', $3, 0)",
            &[&id, &creator, &joined_after],
        )
        .await?;
        self.execute(
            "INSERT INTO conversations (id, group_id, last_seq, last_msg_id, last_ts) \
             VALUES ($1, $2, 0, $3, $4)",
            &[&group_conv(id), &id, &at, &now_ms()],
        )
        .await?;
        Ok(GroupRow {
            id,
            name: name.to_string(),
            desc: desc.to_string(),
            settings,
        })
    }

    async fn group_row(&mut self, group: GroupId) -> StoreResult<Option<GroupRow>> {
        let row = self
            .query_opt(
                "SELECT id, name, description, open, shared_history FROM chat_groups \
                 WHERE id = $1",
                &[&group],
            )
            .await?;
        Ok(row.as_ref().map(row_to_group).transpose()?)
    }

    async fn role(&mut self, group: GroupId, user: UserId) -> StoreResult<Option<Role>> {
        let row = self
            .query_opt(
                "SELECT role FROM group_members WHERE group_id = $1 AND user_id = $2",
                &[&group, &user],
            )
            .await?;
        match row {
            Some(row) => {
                let role: String = row.try_get(0)?;
                Ok(Some(role_of(&role)))
            }
            None => Ok(None),
        }
    }

    /// `joined_seq`: the group's last seq if this batch wrote to it (else the stored one).
    async fn join_group(
        &mut self,
        group: GroupId,
        user: UserId,
        joined_after: MsgId,
        joined_seq: Option<Seq>,
    ) -> StoreResult<GroupRow> {
        let row = self
            .group_row(group)
            .await?
            .ok_or(StoreError::NotFound("no such group"))?;
        if !self.may_join(&row, user).await? {
            return Err(StoreError::NotFound("no such group"));
        }
        let joined_seq = match joined_seq {
            Some(seq) => seq,
            None => self
                .query_opt(
                    "SELECT last_seq FROM conversations WHERE id = $1",
                    &[&group_conv(group)],
                )
                .await?
                .map(|r| r.try_get(0))
                .transpose()?
                .unwrap_or(0),
        };
        let inserted = self
            .execute(
                "INSERT INTO group_members (group_id, user_id, role, joined_after, joined_seq) \
                 VALUES ($1, $2, 'member', $3, $4) ON CONFLICT DO NOTHING",
                &[&group, &user, &joined_after, &joined_seq],
            )
            .await?;
        if inserted == 0 {
            return Err(StoreError::Conflict("already a member"));
        }
        Ok(row)
    }

    /// Whether `user` may join `group` now; uses up an invitation if that is what lets it.
    async fn may_join(&mut self, group: &GroupRow, user: UserId) -> StoreResult<bool> {
        let invited = self
            .execute(
                "DELETE FROM group_invites WHERE group_id = $1 AND user_id = $2",
                &[&group.id, &user],
            )
            .await?;
        if invited > 0 {
            return Ok(true);
        }
        let banned = self
            .query_opt(
                "SELECT 1 FROM group_bans WHERE group_id = $1 AND user_id = $2",
                &[&group.id, &user],
            )
            .await?
            .is_some();
        Ok(group.settings.open && !banned)
    }

    async fn leave_group(&mut self, group: GroupId, user: UserId) -> StoreResult<()> {
        if self.group_row(group).await?.is_none() {
            return Err(StoreError::NotFound("no such group"));
        }
        match self.role(group, user).await? {
            None => Err(StoreError::Forbidden("not a member of that group")),
            Some(Role::Creator) => Err(StoreError::Forbidden(
                "the creator cannot leave a group; delete it instead",
            )),
            Some(Role::Admin | Role::Member) => {
                self.execute(
                    "DELETE FROM group_members WHERE group_id = $1 AND user_id = $2",
                    &[&group, &user],
                )
                .await?;
                Ok(())
            }
        }
    }

    async fn group_kick(&mut self, group: GroupId, by: UserId, member: UserId) -> StoreResult<()> {
        if self.group_row(group).await?.is_none() {
            return Err(StoreError::NotFound("no such group"));
        }
        let by_role = self.role(group, by).await?;
        if !matches!(by_role, Some(Role::Creator | Role::Admin)) {
            return Err(StoreError::Forbidden(
                "only the group's creator or its admins may remove a member",
            ));
        }
        match self.role(group, member).await? {
            Some(Role::Admin) if by_role != Some(Role::Creator) => Err(StoreError::Forbidden(
                "only the group's creator may remove an admin",
            )),
            Some(Role::Creator) => Err(StoreError::Forbidden(
                "the group's creator cannot be removed",
            )),
            Some(Role::Member | Role::Admin) => {
                self.execute(
                    "DELETE FROM group_members WHERE group_id = $1 AND user_id = $2",
                    &[&group, &member],
                )
                .await?;
                self.execute(
                    "INSERT INTO group_bans (group_id, user_id, created_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                    &[&group, &member, &now_ms()],
                )
                .await?;
                Ok(())
            }
            _ => Err(StoreError::NotFound(
                "that user is not a member of the group",
            )),
        }
    }

    async fn delete_group(&mut self, group: GroupId, user: UserId) -> StoreResult<Vec<UserId>> {
        if self.group_row(group).await?.is_none() {
            return Err(StoreError::NotFound("no such group"));
        }
        if self.role(group, user).await? != Some(Role::Creator) {
            return Err(StoreError::Forbidden("only the creator may delete a group"));
        }
        let members = self
            .query(
                "DELETE FROM group_members WHERE group_id = $1 RETURNING user_id",
                &[&group],
            )
            .await?;
        let mut members = members
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<Vec<UserId>, _>>()?;
        members.sort_unstable();
        // Its messages go with it: nothing of a deleted group shows anywhere again.
        let conv = group_conv(group);
        self.execute("DELETE FROM messages WHERE conv = $1", &[&conv])
            .await?;
        self.execute("DELETE FROM cursors WHERE conv = $1", &[&conv])
            .await?;
        self.execute("DELETE FROM conversations WHERE id = $1", &[&conv])
            .await?;
        self.execute("DELETE FROM chat_groups WHERE id = $1", &[&group])
            .await?;
        Ok(members)
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_user(&self, name: &str, password_hash: &str) -> StoreResult<User> {
        let (name, hash) = (name.to_string(), password_hash.to_string());
        self.write(|reply| Write::CreateUser { name, hash, reply })
            .await
    }

    async fn credentials_by_name(&self, name: &str) -> StoreResult<Option<Credentials>> {
        let key = crate::names::name_key(name);
        self.read(|c| async move {
            credentials(
                &c,
                "SELECT id, name, password_hash FROM users WHERE name_key = $1",
                &key,
            )
            .await
        })
        .await
    }

    async fn credentials_by_id(&self, id: UserId) -> StoreResult<Option<Credentials>> {
        self.read(|c| async move {
            credentials(
                &c,
                "SELECT id, name, password_hash FROM users WHERE id = $1",
                &id,
            )
            .await
        })
        .await
    }

    async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        self.read(|c| async move {
            let row = opt_row(&c, "SELECT id, name FROM users WHERE id = $1", &[&id]).await?;
            Ok(row.as_ref().map(row_to_user).transpose()?)
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
        self.read(|c| async move {
            let row = opt_row(
                &c,
                "SELECT u.id, u.name FROM tokens t JOIN users u ON u.id = t.user_id \
                 WHERE t.hash = $1 AND t.expires_ms > $2",
                &[&hash, &now_ms],
            )
            .await?;
            Ok(row.as_ref().map(row_to_user).transpose()?)
        })
        .await
    }

    async fn delete_token(&self, token_hash: &[u8]) -> StoreResult<()> {
        let hash = token_hash.to_vec();
        self.write(|reply| Write::DeleteToken { hash, reply }).await
    }

    async fn revoke_tokens(&self, user: UserId) -> StoreResult<u64> {
        self.read(|c| async move {
            let stmt = c
                .prepare_cached("DELETE FROM tokens WHERE user_id = $1")
                .await?;
            Ok(c.execute(&stmt, &[&user]).await?)
        })
        .await
    }

    async fn set_password(&self, user: UserId, password_hash: &str) -> StoreResult<()> {
        let hash = password_hash.to_string();
        let changed = self
            .read(|c| async move {
                let stmt = c
                    .prepare_cached("UPDATE users SET password_hash = $2 WHERE id = $1")
                    .await?;
                Ok(c.execute(&stmt, &[&user, &hash]).await?)
            })
            .await?;
        if changed == 0 {
            return Err(StoreError::NotFound("no such user"));
        }
        Ok(())
    }

    async fn add_friend(&self, user: UserId, friend: UserId) -> StoreResult<Befriended> {
        in_tx!(self, tx => consent::add_friend(&tx, user, friend))
    }

    async fn remove_friend(&self, user: UserId, friend: UserId) -> StoreResult<()> {
        in_tx!(self, tx => consent::remove_friend(&tx, user, friend))
    }

    async fn decline_friend(&self, user: UserId, from: UserId) -> StoreResult<()> {
        in_tx!(self, tx => consent::decline_friend(&tx, user, from))
    }

    async fn friend_requests(&self, user: UserId) -> StoreResult<(Vec<User>, Vec<User>)> {
        in_tx!(self, tx => consent::friend_requests(&tx, user))
    }

    async fn block(&self, user: UserId, other: UserId) -> StoreResult<bool> {
        in_tx!(self, tx => consent::block(&tx, user, other))
    }

    async fn unblock(&self, user: UserId, other: UserId) -> StoreResult<()> {
        in_tx!(self, tx => consent::unblock(&tx, user, other))
    }

    async fn blocked(&self, user: UserId) -> StoreResult<Vec<User>> {
        in_tx!(self, tx => consent::blocked(&tx, user))
    }

    async fn blocks(&self) -> StoreResult<Vec<(UserId, UserId)>> {
        in_tx!(self, tx => consent::all_blocks(&tx))
    }

    async fn group_invite(
        &self,
        group: GroupId,
        by: UserId,
        user: UserId,
    ) -> StoreResult<GroupRow> {
        in_tx!(self, tx => consent::group_invite(&tx, group, by, user))
    }

    async fn decline_invite(&self, group: GroupId, user: UserId) -> StoreResult<()> {
        in_tx!(self, tx => consent::decline_invite(&tx, group, user))
    }

    async fn invites(&self, user: UserId) -> StoreResult<Vec<Invite>> {
        in_tx!(self, tx => consent::invites(&tx, user))
    }

    async fn set_group_role(
        &self,
        group: GroupId,
        by: UserId,
        user: UserId,
        role: Role,
    ) -> StoreResult<()> {
        in_tx!(self, tx => consent::set_group_role(&tx, group, by, user, role))
    }

    async fn friend_ids(&self, user: UserId) -> StoreResult<Vec<UserId>> {
        self.read(|c| async move {
            let rows = rows(
                &c,
                "SELECT friend_id FROM friends WHERE user_id = $1 ORDER BY friend_id",
                &[&user],
            )
            .await?;
            Ok(rows
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn friends(&self, user: UserId) -> StoreResult<Vec<User>> {
        self.read(|c| async move { friends_of(&c, user).await })
            .await
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
        let members = self
            .read(|c| async move { members_with_roles(&c, group).await })
            .await?;
        if members.is_empty() {
            // Every group has its creator as a member, so an empty list means no group.
            return Err(StoreError::NotFound("no such group"));
        }
        Ok(members)
    }

    async fn group_member_ids(&self, group: GroupId) -> StoreResult<Vec<(UserId, Seq)>> {
        self.read(|c| async move {
            let rows = rows(
                &c,
                "SELECT user_id, joined_seq FROM group_members WHERE group_id = $1 \
                 ORDER BY user_id",
                &[&group],
            )
            .await?;
            Ok(rows
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_, tokio_postgres::Error>>()?)
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
        let limit = limit as i64;
        self.read(|c| async move {
            let state = opt_row(
                &c,
                "SELECT EXISTS(SELECT 1 FROM group_members WHERE group_id = $1 AND user_id = $2) \
                 FROM chat_groups WHERE id = $1",
                &[&group, &viewer],
            )
            .await?;
            match state {
                None => return Err(StoreError::NotFound("no such group")),
                Some(row) if !row.try_get::<_, bool>(0)? => {
                    return Err(StoreError::Forbidden("not a member of that group"))
                }
                Some(_) => {}
            }
            let page = rows(
                &c,
                "SELECT u.id, u.name, gm.role FROM group_members gm \
                 JOIN users u ON u.id = gm.user_id \
                 WHERE gm.group_id = $1 AND gm.user_id > $2 ORDER BY gm.user_id LIMIT $3",
                &[&group, &after, &limit],
            )
            .await?;
            page.iter()
                .map(|r| -> StoreResult<(User, Role)> {
                    let role: String = r.try_get(2)?;
                    Ok((row_to_user(r)?, role_of(&role)))
                })
                .collect()
        })
        .await
    }

    async fn user_groups(
        &self,
        user: UserId,
        page: GroupsPage,
    ) -> StoreResult<Vec<GroupWithMembers>> {
        self.read(|c| async move { groups_of(&c, user, page).await })
            .await
    }

    async fn snapshot(&self, user: UserId, page: GroupsPage) -> StoreResult<Snapshot> {
        self.read(|c| async move {
            // One connection, the queries in flight at once (pipelined).
            let group_ids = async {
                let rows = rows(
                    &c,
                    "SELECT group_id FROM group_members WHERE user_id = $1",
                    &[&user],
                )
                .await?;
                rows.iter()
                    .map(|r| Ok(r.try_get(0)?))
                    .collect::<StoreResult<Vec<GroupId>>>()
            };
            let (friends, groups, admin, group_ids) = tokio::try_join!(
                friends_of(&c, user),
                groups_of(&c, user, page),
                admin_of(&c, user),
                group_ids
            )?;
            Ok(Snapshot {
                friends,
                groups,
                group_ids,
                admin,
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
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|c| async move {
            let rows = match conversation {
                Conversation::With(other) => {
                    if !exists(&c, "SELECT 1 FROM users WHERE id = $1", &[&other]).await? {
                        return Err(StoreError::NotFound("no such user"));
                    }
                    let key = direct_conv(user, other);
                    rows(
                        &c,
                        &format!(
                            "{MSG_SELECT} WHERE m.conv = $1 AND m.seq < {BEFORE_SEQ_PG} \
                             ORDER BY m.seq DESC LIMIT $3"
                        ),
                        &[&key, &before, &limit],
                    )
                    .await?
                }
                Conversation::Group(group) => {
                    // What a member sees: from its join, unless the group shares its
                    // history with new members.
                    let seen_after: Option<Seq> = opt_row(
                        &c,
                        "SELECT CASE WHEN g.shared_history THEN 0 ELSE gm.joined_seq END \
                         FROM group_members gm JOIN chat_groups g ON g.id = gm.group_id \
                         WHERE gm.group_id = $1 AND gm.user_id = $2",
                        &[&group, &user],
                    )
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?;
                    let Some(seen_after) = seen_after else {
                        let found =
                            exists(&c, "SELECT 1 FROM chat_groups WHERE id = $1", &[&group])
                                .await?;
                        return Err(if found {
                            StoreError::Forbidden("not a member of that group")
                        } else {
                            StoreError::NotFound("no such group")
                        });
                    };
                    rows(
                        &c,
                        &format!(
                            "{MSG_SELECT} WHERE m.conv = $1 AND m.seq < {BEFORE_SEQ_PG} \
                             AND m.seq > $4 ORDER BY m.seq DESC LIMIT $3"
                        ),
                        &[&group_conv(group), &before, &limit, &seen_after],
                    )
                    .await?
                }
            };
            let mut msgs = rows.iter().map(row_to_msg).collect::<Result<Vec<_>, _>>()?;
            msgs.reverse();
            Ok(msgs)
        })
        .await
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
        self.read(|c| async move { conv::pending_of(&c, user, &noted, since_ms, limit).await })
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
        self.read(
            |c| async move { conv::fill_of(&c, user, conv, after, noted, before, limit).await },
        )
        .await
    }

    async fn set_admin(&self, name: &str, admin: bool) -> StoreResult<User> {
        let key = crate::names::name_key(name);
        let row = self
            .read(|c| async move {
                opt_row(
                    &c,
                    "UPDATE users SET admin = $2 WHERE name_key = $1 RETURNING id, name",
                    &[&key, &admin],
                )
                .await
            })
            .await?;
        let row = row.ok_or(StoreError::NotFound("no such user"))?;
        Ok(User {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
        })
    }

    async fn is_admin(&self, user: UserId) -> StoreResult<bool> {
        self.read(|c| async move { admin_of(&c, user).await }).await
    }

    async fn set_muted_until(&self, user: UserId, until_ms: i64) -> StoreResult<()> {
        let changed = self
            .read(|c| async move {
                let stmt = c
                    .prepare_cached("UPDATE users SET muted_until = $2 WHERE id = $1")
                    .await?;
                Ok(c.execute(&stmt, &[&user, &until_ms]).await?)
            })
            .await?;
        if changed == 0 {
            return Err(StoreError::NotFound("no such user"));
        }
        Ok(())
    }

    async fn mutes(&self, now_ms: i64) -> StoreResult<Vec<(UserId, i64)>> {
        self.read(|c| async move {
            let rows = rows(
                &c,
                "SELECT id, muted_until FROM users WHERE muted_until > $1",
                &[&now_ms],
            )
            .await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
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
        let chunk = i64::try_from(chunk).unwrap_or(i64::MAX);
        self.read(|c| async move {
            let stmt = c
                .prepare_cached(
                    "DELETE FROM messages WHERE id IN \
                     (SELECT id FROM messages WHERE ts < $1 ORDER BY ts LIMIT $2)",
                )
                .await?;
            Ok(c.execute(&stmt, &[&before_ms, &chunk]).await?)
        })
        .await
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
        self.read(|c| async move { conv::conversations_of(&c, user, before, limit).await })
            .await
    }

    async fn conv_peers(
        &self,
        user: UserId,
        conv: ConvId,
    ) -> StoreResult<(Option<GroupId>, Vec<UserId>)> {
        self.read(|c| async move { conv::peers_of(&c, user, conv).await })
            .await
    }

    async fn sync(
        &self,
        user: UserId,
        positions: &[ConvPos],
        limit: usize,
    ) -> StoreResult<(Vec<Msg>, bool)> {
        let positions = positions.to_vec();
        self.read(|c| async move { conv::sync_of(&c, user, &positions, limit).await })
            .await
    }

    async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writes.send(Write::Close { reply: tx }).await.is_ok() {
            let _ = rx.await;
        }
    }
}
