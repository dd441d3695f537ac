//! The bus of a single node: every session is in this process's [`Hub`].

use std::sync::Arc;

use chat_proto::UserId;

use super::Bus;
use crate::hub::{Frame, Hub};

/// Delivers straight into this node's hub.
#[derive(Debug, Clone)]
pub struct LocalBus {
    hub: Hub,
}

impl LocalBus {
    pub fn new(hub: Hub) -> LocalBus {
        LocalBus { hub }
    }
}

impl Bus for LocalBus {
    fn publish(&self, users: &[UserId], frame: Arc<Frame>) {
        for user in users {
            self.hub.deliver(*user, &frame);
        }
    }

    fn kick(&self, user: UserId, message: Option<String>) {
        self.hub.kick_by_admin(user, message);
    }

    fn broadcast(&self, frame: Arc<Frame>) {
        self.hub.deliver_all(&frame);
    }
}
