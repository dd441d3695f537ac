//! A node of a cluster: several chatd processes on one PostgreSQL database and one Redis.
//!
//! - Messages go only where their recipients are ([`channels`]): after its commit, a node
//!   publishes each message once, on its recipient's channel or its group's, and Redis
//!   hands it to the nodes subscribed there, whose dispatchers deliver it to the sessions
//!   they hold. No node follows the whole cluster's traffic, and no lock or counter is
//!   shared on the message path: order lives in each conversation (its seq), and a
//!   session fills a hole in a conversation from PostgreSQL (see `delivered.rs`). When a
//!   node may have missed publications (it lost Redis, or another node died between a
//!   commit and its publication), its sessions catch up from the store.
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

mod channels;

pub(crate) use channels::Channels;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_proto::{Event, UserId};
use futures::StreamExt;
use redis::AsyncCommands;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::blocks::Blocks;
use crate::bus::redis::{ClusterEvent, Outgoing, RedisBus};
use crate::bus::Bus;
use crate::config::Cluster;
use crate::hub::{Frame, Hub, RemoteSession};
use crate::mutes::Mutes;
use crate::store::{Commit, CommitBatch, CommitLog, Store};

use crate::ServerError;
use channels::{Reconcile, Routed};

/// How often a node says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a silent node counts as alive.
pub const NODE_TTL: Duration = Duration::from_secs(10);
/// The longest wait between two attempts to reach Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Redis keys and channels of one cluster.
#[derive(Debug, Clone)]
struct Keys {
    events: String,
    presence: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        Keys {
            events: format!("{prefix}events"),
            presence: format!("{prefix}presence"),
        }
    }
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
    blocks: Blocks,
    channels: Arc<Channels>,
    /// When each other node was last heard from.
    seen: Mutex<HashMap<String, Instant>>,
}

/// Joins the cluster: starts the router, publisher, subscriber and heartbeat tasks.
/// Returns the bus for sessions and what the dispatcher delivers: this node's commits and
/// the messages routed to it.
pub async fn start(
    config: &Cluster,
    store: Arc<dyn Store>,
    hub: Hub,
    mutes: Mutes,
    blocks: Blocks,
    commits: CommitLog,
    stop: CancellationToken,
) -> Result<(Arc<dyn Bus>, CommitLog), ServerError> {
    let client = redis::Client::open(config.redis_url.as_str())
        .map_err(|e| ServerError::Config(format!("--redis: {e}")))?;
    let keys = Keys::new(&config.key_prefix);
    let id: Arc<str> = Arc::from(config.node_id.as_str());
    let (out_tx, out_rx) = mpsc::channel(64 * 1024);
    let (channels, reconcile) = Channels::new(&config.key_prefix);
    let bus = Arc::new(RedisBus::new(
        hub.clone(),
        id.clone(),
        out_tx.clone(),
        channels.clone(),
    ));
    let node = Arc::new(Node {
        id: id.clone(),
        keys: keys.clone(),
        hub: hub.clone(),
        store,
        bus: bus.clone(),
        out: out_tx.clone(),
        mutes,
        blocks,
        channels: channels.clone(),
        seen: Mutex::new(HashMap::new()),
    });
    let (feed_tx, feed_rx) = mpsc::channel(16 * 1024);
    tokio::spawn(route(
        commits,
        feed_tx.clone(),
        out_tx.clone(),
        id.clone(),
        channels,
        hub,
    ));
    tokio::spawn(publish(client.clone(), keys, id, out_rx, stop.clone()));
    tokio::spawn(subscribe(
        client,
        node.clone(),
        feed_tx,
        reconcile,
        stop.clone(),
    ));
    tokio::spawn(heartbeat(node, stop));
    tracing::info!(node = %config.node_id, "joined the cluster");
    Ok((bus, feed_rx))
}

/// Hands this node's commits to its dispatcher, and publishes each message once, on the
/// channel of its recipient (unless the recipient is here) or of its group; joins,
/// leaves and deletions go on their group's channel.
async fn route(
    mut commits: CommitLog,
    dispatcher: mpsc::Sender<CommitBatch>,
    publisher: mpsc::Sender<Outgoing>,
    node: Arc<str>,
    channels: Arc<Channels>,
    hub: Hub,
) {
    while let Some(batch) = commits.recv().await {
        let mut by_channel: Vec<(String, Vec<Commit>)> = Vec::new();
        for commit in &batch.commits {
            let channel = match commit {
                Commit::Msg(msg) => match (msg.to, msg.group) {
                    (Some(to), _) if hub.is_local(to) => continue,
                    (Some(to), _) => channels.user(to),
                    (None, Some(group)) => channels.group(group),
                    (None, None) => continue,
                },
                Commit::Joined { group, .. }
                | Commit::Left { group, .. }
                | Commit::GroupDeleted { group, .. } => channels.group(*group),
                Commit::ForgetGroups | Commit::ForgetGroup { .. } => continue,
            };
            match by_channel.iter_mut().find(|(c, _)| *c == channel) {
                Some((_, list)) => list.push(commit.clone()),
                None => by_channel.push((channel, vec![commit.clone()])),
            }
        }
        if !by_channel.is_empty() {
            let messages: Vec<(String, String)> = by_channel
                .into_iter()
                .filter_map(|(channel, commits)| {
                    let routed = Routed {
                        node: node.to_string(),
                        commits,
                    };
                    serde_json::to_string(&routed)
                        .ok()
                        .map(|text| (channel, text))
                })
                .collect();
            // A publication dropped here (Redis away for long) is caught up by the nodes
            // concerned when they get Redis back.
            if publisher.try_send(Outgoing::Route(messages)).is_err() {
                tracing::warn!("cluster: publisher queue full; dropping routed messages");
            }
        }
        if dispatcher.send(batch).await.is_err() {
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
                Outgoing::Route(messages) => {
                    // One round trip for the whole batch.
                    let mut pipe = redis::pipe();
                    for (channel, text) in messages.iter() {
                        pipe.publish(channel, text).ignore();
                    }
                    pipe.query_async(&mut conn).await
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
                    tracing::warn!(error = %e, "cluster: Redis publish failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    conn = connect(&client).await;
                }
            }
        }
    }
}

/// Listens to the events channel and to the channels this node needs ([`channels`]);
/// subscribes and unsubscribes as sessions come and go. Whenever the connection to Redis
/// is lost it subscribes again, resynchronises presence, and has every session catch up
/// from the store (what was published meanwhile never reached this node).
async fn subscribe(
    client: redis::Client,
    node: Arc<Node>,
    dispatcher: mpsc::Sender<CommitBatch>,
    mut requests: mpsc::UnboundedReceiver<Reconcile>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    let mut first = true;
    while !stop.is_cancelled() {
        let connected = match client.get_async_pubsub().await {
            Ok(pubsub) => {
                let (mut sink, stream) = pubsub.split();
                let mut wanted = vec![node.keys.events.clone()];
                wanted.extend(node.channels.all());
                match sink.subscribe(&wanted).await {
                    Ok(()) => Ok((sink, stream, wanted)),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        let (mut sink, mut stream, wanted) = match connected {
            Ok(connected) => connected,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot subscribe; retrying");
                // Redis is away: what other nodes commit for this node's users reaches
                // them from the store, every few seconds at most.
                node.hub.deliver_all(&Frame::catch_up());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let mut subscribed: HashSet<String> = wanted.into_iter().collect();
        backoff = Duration::from_millis(50);
        if !first {
            let forget = CommitBatch {
                after: 0,
                last: 0,
                commits: vec![Commit::ForgetGroups],
            };
            if dispatcher.send(forget).await.is_err() {
                return;
            }
            node.hub.deliver_all(&Frame::catch_up());
            // Blocks changed on other nodes meanwhile were published, not received.
            match node.store.blocks().await {
                Ok(pairs) => node.blocks.replace(pairs),
                Err(e) => tracing::warn!(error = %e, "cluster: cannot reload blocks"),
            }
        }
        first = false;
        // Subscribed first, then read the hash: no presence change falls between.
        if let Err(e) = resync(&client, &node).await {
            tracing::warn!(error = %e, "cluster: cannot resynchronise presence");
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                request = requests.recv() => {
                    let Some(request) = request else {
                        return;
                    };
                    let done = reconcile(&mut sink, &node, &dispatcher, &mut subscribed, request);
                    if let Err(e) = done.await {
                        tracing::warn!(error = %e, "cluster: cannot change subscriptions; reconnecting");
                        break;
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else {
                        tracing::warn!("cluster: lost the Redis subscription; reconnecting");
                        break;
                    };
                    let Ok(payload) = message.get_payload::<String>() else {
                        continue;
                    };
                    let channel = message.get_channel_name();
                    if channel == node.keys.events {
                        match serde_json::from_str::<ClusterEvent>(&payload) {
                            Ok(event) => node.on_event(event),
                            Err(e) => tracing::warn!(error = %e, "cluster: unreadable event"),
                        }
                    } else if node.channels.is_routed(channel) {
                        match serde_json::from_str::<Routed>(&payload) {
                            Ok(routed) if routed.node != *node.id => {
                                node.heard(&routed.node);
                                let batch = CommitBatch {
                                    after: 0,
                                    last: 0,
                                    commits: routed.commits,
                                };
                                if dispatcher.send(batch).await.is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "cluster: unreadable message"),
                        }
                    }
                }
            }
        }
    }
}

/// Brings Redis's subscriptions to `request.channels` in line with what this node needs;
/// a group subscribed to again has its member list reloaded by the dispatcher.
async fn reconcile(
    sink: &mut redis::aio::PubSubSink,
    node: &Node,
    dispatcher: &mpsc::Sender<CommitBatch>,
    subscribed: &mut HashSet<String>,
    request: Reconcile,
) -> redis::RedisResult<()> {
    for channel in request.channels {
        let needed = node.channels.needed(&channel);
        if needed && !subscribed.contains(&channel) {
            sink.subscribe(&channel).await?;
        } else if !needed && subscribed.contains(&channel) {
            sink.unsubscribe(&channel).await?;
        } else {
            continue;
        }
        if let Some(group) = node.channels.group_of(&channel) {
            let forget = CommitBatch {
                after: 0,
                last: 0,
                commits: vec![Commit::ForgetGroup { group }],
            };
            let _ = dispatcher.send(forget).await;
        }
        if needed {
            subscribed.insert(channel);
        } else {
            subscribed.remove(&channel);
        }
    }
    if let Some(done) = request.done {
        let _ = done.send(());
    }
    Ok(())
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
                    ts_ms: 0,
                    msg_id: None,
                    conv_seq: (0, 0),
                    catch_up: false,
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
                        ts_ms: 0,
                        msg_id: None,
                        conv_seq: (0, 0),
                        catch_up: false,
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
            ClusterEvent::Blocked {
                node,
                user,
                other,
                on,
            } => {
                if node != *self.id {
                    self.heard(&node);
                    self.blocks.set(user, other, on);
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
        // A node that died between a commit and its publication: what it committed is
        // in the store. Every session here catches up.
        self.hub.deliver_all(&Frame::catch_up());
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
