//! Delivery between sessions behind one interface: in-process now ([`local::LocalBus`]),
//! between nodes later. A bus takes a frame and the users it is for, and gets it to
//! those of them who are online, wherever they are.

pub mod local;

use std::sync::Arc;

use chat_proto::UserId;

use crate::hub::Frame;

/// Gets frames to online users.
pub trait Bus: Send + Sync + 'static {
    /// Queues `frame` for each of `users` who is online. Never waits.
    fn publish(&self, users: &[UserId], frame: Arc<Frame>);
}
