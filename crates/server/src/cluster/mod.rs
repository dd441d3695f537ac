//! A node of a cluster: several chatd processes on one PostgreSQL database and one Redis.
//!
//! - Messages travel on the *commit log*: every node's store assigns ids under one
//!   PostgreSQL lock, so batches are contiguous in ids cluster-wide. A node publishes its
//!   batches on the Redis channel `<prefix>log`; every node puts all batches back in
//!   order ([`follower`]) and its dispatcher delivers to the sessions it holds. A gap is
//!   read from PostgreSQL, so a lost publication never loses a message.
//! - Everything else (presence, friend and group events) goes through [`RedisBus`] on the
//!   channel `<prefix>events`; a frame for users of this node never leaves it.
//! - Presence: each node keeps its sessions in the Redis hash `<prefix>presence` and
//!   announces them (`online`/`offline` events); every node keeps a replica in its hub.
//!   A login anywhere ends the user's session on any other node.
//! - Liveness: nodes send a heartbeat every [`HEARTBEAT`]; a node silent for
//!   [`NODE_TTL`] is dead: its users count as offline everywhere (and their friends are
//!   told), and messages to them wait in the store for their next login.
//! - When Redis is unreachable, each node keeps serving its own users, retries, and on
//!   reconnecting puts its sessions back in the hash and reloads the others'.

pub mod follower;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_proto::{Event, UserId};
use futures::StreamExt;
use redis::AsyncCommands;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bus::redis::{ClusterEvent, Outgoing, RedisBus};
use crate::bus::Bus;
use crate::config::Cluster;
use crate::hub::{Frame, Hub, RemoteSession};
use crate::mutes::Mutes;
use crate::store::{CommitBatch, CommitLog, Store};
use crate::ServerError;

/// How often a node says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a silent node counts as alive.
pub const NODE_TTL: Duration = Duration::from_secs(10);
/// The longest wait between two attempts to reach Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Redis keys and channels of one cluster.
#[derive(Debug, Clone)]
struct Keys {
    log: String,
    events: String,
    presence: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        Keys {
            log: format!("{prefix}log"),
            events: format!("{prefix}events"),
            presence: format!("{prefix}presence"),
        }
    }
}

/// A log batch on the wire, with the node that committed it.
#[derive(serde::Serialize, serde::Deserialize)]
struct LogMessage {
    node: String,
    batch: CommitBatch,
}

/// Shared state of this node's cluster tasks.
struct Node {
    id: Arc<str>,
    keys: Keys,
    hub: Hub,
    store: Arc<dyn Store>,
    bus: Arc<RedisBus>,
    out: mpsc::Sender<Outgoing>,
    mutes: Mutes,
    /// When each other node was last heard from.
    seen: Mutex<HashMap<String, Instant>>,
}

/// Joins the cluster: starts the publisher, subscriber, follower and heartbeat tasks.
/// Returns the bus for sessions and the ordered commit log for the dispatcher.
pub async fn start(
    config: &Cluster,
    store: Arc<dyn Store>,
    hub: Hub,
    mutes: Mutes,
    commits: CommitLog,
    stop: CancellationToken,
) -> Result<(Arc<dyn Bus>, CommitLog), ServerError> {
    let client = redis::Client::open(config.redis_url.as_str())
        .map_err(|e| ServerError::Config(format!("--redis: {e}")))?;
    let keys = Keys::new(&config.key_prefix);
    let id: Arc<str> = Arc::from(config.node_id.as_str());
    let (out_tx, out_rx) = mpsc::channel(64 * 1024);
    let bus = Arc::new(RedisBus::new(hub.clone(), id.clone(), out_tx.clone()));
    let node = Arc::new(Node {
        id: id.clone(),
        keys: keys.clone(),
        hub,
        store: store.clone(),
        bus: bus.clone(),
        out: out_tx.clone(),
        mutes,
        seen: Mutex::new(HashMap::new()),
    });
    let start_after = store
        .last_msg_id()
        .await
        .map_err(|e| ServerError::Store(e.to_string()))?;
    let (follow_tx, follow_rx) = mpsc::channel(16 * 1024);
    let (ordered_tx, ordered_rx) = mpsc::channel(16 * 1024);
    tokio::spawn(follower::run(
        follow_rx,
        ordered_tx,
        store,
        start_after,
        stop.clone(),
    ));
    tokio::spawn(pump_log(commits, follow_tx.clone(), out_tx.clone()));
    tokio::spawn(publish(client.clone(), keys, id, out_rx, stop.clone()));
    tokio::spawn(subscribe(client, node.clone(), follow_tx, stop.clone()));
    tokio::spawn(heartbeat(node, stop));
    tracing::info!(node = %config.node_id, "joined the cluster");
    Ok((bus, ordered_rx))
}

/// Hands this node's batches to its follower and to the publisher.
async fn pump_log(
    mut commits: CommitLog,
    follower: mpsc::Sender<CommitBatch>,
    publisher: mpsc::Sender<Outgoing>,
) {
    while let Some(batch) = commits.recv().await {
        let shared = Arc::new(batch.clone());
        // Other nodes fill a publication that is dropped here from the store.
        let _ = publisher.try_send(Outgoing::Log(shared));
        if follower.send(batch).await.is_err() {
            return;
        }
    }
}

async fn connect(client: &redis::Client) -> redis::aio::MultiplexedConnection {
    let mut backoff = Duration::from_millis(50);
    loop {
        match client.get_multiplexed_async_connection().await {
            Ok(conn) => return conn,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot reach Redis; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Removes a user's entry from the presence hash if it is still the given session.
const CLEAR_PRESENCE: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.sub(v, 1, string.len(ARGV[2])) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0";

/// Carries out what the bus queued, in order, retrying while Redis is unreachable.
async fn publish(
    client: redis::Client,
    keys: Keys,
    node: Arc<str>,
    mut queue: mpsc::Receiver<Outgoing>,
    stop: CancellationToken,
) {
    let clear = redis::Script::new(CLEAR_PRESENCE);
    let mut conn = connect(&client).await;
    while let Some(item) = queue.recv().await {
        let mut backoff = Duration::from_millis(50);
        loop {
            let result: redis::RedisResult<()> = match &item {
                Outgoing::Event(event) => match serde_json::to_string(event) {
                    Ok(text) => conn.publish(&keys.events, text).await,
                    Err(_) => Ok(()),
                },
                Outgoing::Log(batch) => {
                    let message = LogMessage {
                        node: node.to_string(),
                        batch: (**batch).clone(),
                    };
                    match serde_json::to_string(&message) {
                        Ok(text) => conn.publish(&keys.log, text).await,
                        Err(_) => Ok(()),
                    }
                }
                Outgoing::SetPresence {
                    user,
                    name,
                    conn: c,
                } => {
                    conn.hset(&keys.presence, *user, format!("{node}|{c}|{name}"))
                        .await
                }
                Outgoing::ClearPresence { user, session } => clear
                    .key(&keys.presence)
                    .arg(*user)
                    .arg(session)
                    .invoke_async(&mut conn)
                    .await
                    .map(|_: i64| ()),
            };
            match result {
                Ok(()) => break,
                Err(e) if stop.is_cancelled() => {
                    tracing::debug!(error = %e, "cluster: dropping an event at shutdown");
                    break;
                }
                Err(e) => {
                    // A log batch that cannot go out is read from the store by the others.
                    if matches!(item, Outgoing::Log(_)) && backoff > Duration::from_millis(400) {
                        break;
                    }
                    tracing::warn!(error = %e, "cluster: Redis publish failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    conn = connect(&client).await;
                }
            }
        }
    }
}

/// Listens to the log and events channels; resubscribes (and resynchronises presence)
/// whenever the connection to Redis is lost.
async fn subscribe(
    client: redis::Client,
    node: Arc<Node>,
    follower: mpsc::Sender<CommitBatch>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    while !stop.is_cancelled() {
        let mut pubsub = match client.get_async_pubsub().await {
            Ok(pubsub) => pubsub,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot subscribe; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if let Err(e) = pubsub
            .subscribe(&[node.keys.log.as_str(), node.keys.events.as_str()])
            .await
        {
            tracing::warn!(error = %e, "cluster: cannot subscribe; retrying");
            tokio::time::sleep(backoff).await;
            continue;
        }
        backoff = Duration::from_millis(50);
        // Subscribed first, then read the hash: no presence change falls between.
        if let Err(e) = resync(&client, &node).await {
            tracing::warn!(error = %e, "cluster: cannot resynchronise presence");
        }
        let mut messages = pubsub.on_message();
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => return,
                message = messages.next() => message,
            };
            let Some(message) = message else {
                tracing::warn!("cluster: lost the Redis subscription; reconnecting");
                break;
            };
            let Ok(payload) = message.get_payload::<String>() else {
                continue;
            };
            if message.get_channel_name() == node.keys.log {
                match serde_json::from_str::<LogMessage>(&payload) {
                    Ok(log) if log.node != *node.id => {
                        node.heard(&log.node);
                        if follower.send(log.batch).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cluster: unreadable log message"),
                }
            } else {
                match serde_json::from_str::<ClusterEvent>(&payload) {
                    Ok(event) => node.on_event(event),
                    Err(e) => tracing::warn!(error = %e, "cluster: unreadable event"),
                }
            }
        }
    }
}

/// Puts this node's sessions back in the presence hash and reloads everyone else's.
async fn resync(client: &redis::Client, node: &Node) -> redis::RedisResult<()> {
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mine = node.hub.local_sessions();
    if !mine.is_empty() {
        let entries: Vec<(UserId, String)> = mine
            .iter()
            .map(|(user, c)| (user.id, format!("{}|{c}|{}", node.id, user.name)))
            .collect();
        for chunk in entries.chunks(1000) {
            let _: () = conn.hset_multiple(&node.keys.presence, chunk).await?;
        }
    }
    let all: HashMap<UserId, String> = conn.hgetall(&node.keys.presence).await?;
    let now = Instant::now();
    let mut remote = Vec::new();
    let mut stale = Vec::new();
    {
        let mut seen = node.seen.lock().unwrap_or_else(|e| e.into_inner());
        for (user, value) in all {
            let mut parts = value.splitn(3, '|');
            let (Some(other), Some(c), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if other == &*node.id {
                // An entry of this node whose end was not recorded (Redis was away).
                let live = mine
                    .iter()
                    .any(|(u, c)| u.id == user && c.to_string() == conn_text(&value));
                if !live {
                    stale.push(user);
                }
                continue;
            }
            // Nodes found here get a full lifetime to show they are alive.
            seen.entry(other.to_string()).or_insert(now);
            remote.push((
                user,
                RemoteSession {
                    node: Arc::from(other),
                    conn_id: c.parse().unwrap_or(0),
                    name: name.to_string(),
                },
            ));
        }
    }
    if !stale.is_empty() {
        let _: () = conn.hdel(&node.keys.presence, &stale).await?;
    }
    tracing::info!(remote = remote.len(), "cluster: presence resynchronised");
    node.hub.replace_remote(remote);
    Ok(())
}

/// The connection id in a presence entry (`node|conn|name`).
fn conn_text(entry: &str) -> &str {
    entry.split('|').nth(1).unwrap_or("")
}

impl Node {
    fn heard(&self, other: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.insert(other.to_string(), Instant::now());
    }

    fn on_event(&self, event: ClusterEvent) {
        match event {
            ClusterEvent::Deliver {
                node,
                users,
                frame,
                changes_friends,
            } => {
                if node == *self.id {
                    return;
                }
                self.heard(&node);
                let frame = Arc::new(Frame {
                    msg_id: None,
                    conv_seq: (0, 0),
                    changes_friends,
                    bytes: frame.into_bytes(),
                });
                for user in users {
                    self.hub.deliver(user, &frame);
                }
            }
            ClusterEvent::Online {
                node,
                user,
                name,
                conn,
                since_ms,
            } => {
                if node == *self.id {
                    return;
                }
                self.heard(&node);
                self.hub.set_remote(
                    user,
                    RemoteSession {
                        node: Arc::from(node.as_str()),
                        conn_id: conn,
                        name,
                    },
                );
                // One session per user, cluster-wide: the newest login wins.
                if let Some(old) = self.hub.evict_older(user, since_ms) {
                    old.outbox
                        .kick(chat_proto::event::kick_reason::LOGGED_IN_ELSEWHERE);
                }
            }
            ClusterEvent::Offline { node, user, conn } => {
                if node == *self.id {
                    return;
                }
                self.heard(&node);
                self.hub.clear_remote(user, &node, conn);
            }
            ClusterEvent::Heartbeat { node } => {
                if node != *self.id {
                    self.heard(&node);
                }
            }
            ClusterEvent::Kick {
                node,
                user,
                message,
            } => {
                if node != *self.id {
                    self.heard(&node);
                    self.hub.kick_by_admin(user, message);
                }
            }
            ClusterEvent::Broadcast { node, frame } => {
                if node != *self.id {
                    self.heard(&node);
                    self.hub.deliver_all(&Arc::new(Frame {
                        msg_id: None,
                        conv_seq: (0, 0),
                        changes_friends: false,
                        bytes: frame.into_bytes(),
                    }));
                }
            }
            ClusterEvent::Muted { node, user, until } => {
                if node != *self.id {
                    self.heard(&node);
                    self.mutes.set(user, until);
                }
            }
        }
    }

    /// Nodes not heard from for [`NODE_TTL`]: their users go offline here; the node that
    /// sorts first among the living also clears them from Redis and tells their friends.
    async fn reap(&self) {
        let dead: Vec<String> = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let dead: Vec<String> = seen
                .iter()
                .filter(|(_, at)| at.elapsed() > NODE_TTL)
                .map(|(node, _)| node.clone())
                .collect();
            for node in &dead {
                seen.remove(node);
            }
            dead
        };
        if dead.is_empty() {
            return;
        }
        let janitor = {
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.keys().all(|other| **other > *self.id)
        };
        for node in dead {
            let users = self.hub.drop_node(&node);
            tracing::warn!(%node, users = users.len(), "cluster: node is gone; its users are offline");
            if !janitor {
                continue;
            }
            for user in users {
                let _ = self.out.try_send(Outgoing::ClearPresence {
                    user,
                    session: format!("{node}|"),
                });
                match self.store.friend_ids(user).await {
                    Ok(friends) if !friends.is_empty() => self.bus.publish(
                        &friends,
                        Frame::event(&Event::Presence {
                            user,
                            online: false,
                        }),
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cluster: cannot tell friends"),
                }
            }
        }
    }
}

/// Sends heartbeats and reaps silent nodes.
async fn heartbeat(node: Arc<Node>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let _ = node.out.try_send(Outgoing::Event(ClusterEvent::Heartbeat {
            node: node.id.to_string(),
        }));
        node.reap().await;
    }
}
