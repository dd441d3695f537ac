//! Delivery between sessions behind one interface: in-process ([`local::LocalBus`]) or
//! across the nodes of a cluster ([`redis::RedisBus`]). A bus takes a frame and the users
//! it is for, and gets it to those of them who are online, wherever they are; it also
//! hears when a session starts and ends, so that other nodes know who is online.
//!
//! Messages do not travel on the bus: they travel on the commit log (see
//! [`crate::dispatch`] and [`crate::cluster`]), which keeps them in order.

pub mod local;
pub mod redis;

use std::sync::Arc;

use chat_proto::types::User;
use chat_proto::{GroupId, UserId};
use futures::future::BoxFuture;

use crate::hub::Frame;

/// Gets frames to online users.
pub trait Bus: Send + Sync + 'static {
    /// Queues `frame` for each of `users` who is online. Never waits.
    fn publish(&self, users: &[UserId], frame: Arc<Frame>);

    /// `user`'s session `conn_id` on this node, logged in at `since_ms`, became its live
    /// one (it is in the hub).
    fn session_started(&self, _user: &User, _conn_id: u64, _since_ms: i64) {}

    /// `user`'s live session `conn_id` on this node ended.
    fn session_ended(&self, _user: UserId, _conn_id: u64) {}

    /// Makes this node receive the messages of `user` and of `groups` (a cluster node
    /// subscribes to their channels). Resolves once it does, or gave up trying (then the
    /// node catches its sessions up when it can): a session reads what is pending only
    /// after, so that nothing committed meanwhile falls between the two.
    fn listen(&self, _user: UserId, _groups: &[GroupId]) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }

    /// Ends `user`'s session wherever it is, on an admin's word (`kicked`, `admin`).
    fn kick(&self, user: UserId, message: Option<String>);

    /// Queues `frame` for every user online.
    fn broadcast(&self, frame: Arc<Frame>);

    /// Tells the other nodes that `user` is muted until `until_ms` (0: not muted); this
    /// node has noted it already.
    fn muted(&self, _user: UserId, _until_ms: i64) {}

    /// Tells the other nodes that `user` blocks `other` (`on`) or no longer does; this
    /// node has noted it already.
    fn blocked(&self, _user: UserId, _other: UserId, _on: bool) {}
}
