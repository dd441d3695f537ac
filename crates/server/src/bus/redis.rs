//! The bus of a cluster node: events for users on other nodes go through Redis pub/sub,
//! and the node's sessions are kept in a Redis hash so that every node knows who is
//! online where.
//!
//! The bus never waits on Redis: what it sends goes through a bounded queue to one
//! publisher task ([`crate::cluster`]), which retries while Redis is unreachable. Frames
//! for users of this node are delivered at once, Redis or not.

use std::sync::Arc;

use chat_proto::types::User;
use chat_proto::{GroupId, UserId};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::Bus;
use crate::cluster::Channels;
use crate::hub::{Frame, Hub};

/// What nodes tell each other on the events channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ClusterEvent {
    /// A frame for these users (each node delivers to those it holds).
    Deliver {
        node: String,
        users: Vec<UserId>,
        frame: String,
        /// The frame adds or removes a friend of its recipients.
        #[serde(default)]
        changes_friends: bool,
    },
    /// A session started at `since_ms`: the user is online on `node`; any session of it
    /// that started earlier ends.
    Online {
        node: String,
        user: UserId,
        name: String,
        conn: u64,
        since_ms: i64,
    },
    /// A session ended: the user is offline (unless it is online on another node).
    Offline {
        node: String,
        user: UserId,
        conn: u64,
    },
    /// The node is alive.
    Heartbeat { node: String },
    /// An admin kicked the user: whichever node holds its session ends it.
    Kick {
        node: String,
        user: UserId,
        message: Option<String>,
    },
    /// A frame for everyone online.
    Broadcast { node: String, frame: String },
    /// The user is muted until then (0: not muted).
    Muted {
        node: String,
        user: UserId,
        until: i64,
    },
    /// `user` blocks `other` (`on`), or no longer does.
    Blocked {
        node: String,
        user: UserId,
        other: UserId,
        on: bool,
    },
}

/// What the publisher task does, in order.
#[derive(Debug)]
pub enum Outgoing {
    /// Publish on the events channel.
    Event(ClusterEvent),
    /// Publish routed messages: (channel, payload), in one round trip.
    Route(Vec<(String, String)>),
    /// Note the user's session in the presence hash.
    SetPresence {
        user: UserId,
        name: String,
        conn: u64,
    },
    /// Remove the user's entry from the presence hash if it starts with `session`
    /// (`node|conn|` for one session, `node|` for every session of a node).
    ClearPresence { user: UserId, session: String },
}

/// The bus of a node in a cluster.
pub struct RedisBus {
    hub: Hub,
    node: Arc<str>,
    out: mpsc::Sender<Outgoing>,
    channels: Arc<Channels>,
}

/// How long a login waits for its channels before it reads what is pending anyway (the
/// node catches its sessions up when Redis is back).
const LISTEN_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

impl RedisBus {
    pub(crate) fn new(
        hub: Hub,
        node: Arc<str>,
        out: mpsc::Sender<Outgoing>,
        channels: Arc<Channels>,
    ) -> RedisBus {
        RedisBus {
            hub,
            node,
            out,
            channels,
        }
    }

    fn send(&self, item: Outgoing) {
        if let Err(e) = self.out.try_send(item) {
            // The queue is full only if Redis has been unreachable for a long while.
            tracing::warn!(error = %e, "cluster: publisher queue full; dropping an event");
        }
    }
}

impl Bus for RedisBus {
    fn publish(&self, users: &[UserId], frame: Arc<Frame>) {
        // Users not on this node go to the others whether or not this node knows them
        // online: a login elsewhere may not have reached this node's replica yet, and the
        // node that holds the session is the one that knows.
        let mut elsewhere = Vec::new();
        for user in users {
            if !self.hub.deliver(*user, &frame) {
                elsewhere.push(*user);
            }
        }
        if elsewhere.is_empty() {
            return;
        }
        let Ok(text) = std::str::from_utf8(&frame.bytes) else {
            return;
        };
        self.send(Outgoing::Event(ClusterEvent::Deliver {
            node: self.node.to_string(),
            users: elsewhere,
            frame: text.to_string(),
            changes_friends: frame.changes_friends,
        }));
    }

    fn session_started(&self, user: &User, conn_id: u64, since_ms: i64) {
        self.send(Outgoing::SetPresence {
            user: user.id,
            name: user.name.clone(),
            conn: conn_id,
        });
        self.send(Outgoing::Event(ClusterEvent::Online {
            node: self.node.to_string(),
            user: user.id,
            name: user.name.clone(),
            conn: conn_id,
            since_ms,
        }));
    }

    fn kick(&self, user: UserId, message: Option<String>) {
        if !self.hub.kick_by_admin(user, message.clone()) {
            self.send(Outgoing::Event(ClusterEvent::Kick {
                node: self.node.to_string(),
                user,
                message,
            }));
        }
    }

    fn broadcast(&self, frame: Arc<Frame>) {
        self.hub.deliver_all(&frame);
        if let Ok(text) = std::str::from_utf8(&frame.bytes) {
            self.send(Outgoing::Event(ClusterEvent::Broadcast {
                node: self.node.to_string(),
                frame: text.to_string(),
            }));
        }
    }

    fn muted(&self, user: UserId, until_ms: i64) {
        self.send(Outgoing::Event(ClusterEvent::Muted {
            node: self.node.to_string(),
            user,
            until: until_ms,
        }));
    }

    fn blocked(&self, user: UserId, other: UserId, on: bool) {
        self.send(Outgoing::Event(ClusterEvent::Blocked {
            node: self.node.to_string(),
            user,
            other,
            on,
        }));
    }

    fn listen(&self, user: UserId, groups: &[GroupId]) -> BoxFuture<'static, ()> {
        let done = self.channels.listen(user, groups);
        Box::pin(async move {
            let _ = tokio::time::timeout(LISTEN_WAIT, done).await;
        })
    }

    fn session_ended(&self, user: UserId, conn_id: u64) {
        self.channels.forget(user);
        self.send(Outgoing::ClearPresence {
            user,
            session: format!("{}|{conn_id}|", self.node),
        });
        self.send(Outgoing::Event(ClusterEvent::Offline {
            node: self.node.to_string(),
            user,
            conn: conn_id,
        }));
    }
}
