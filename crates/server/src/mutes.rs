//! Who is muted, until when: loaded from the store at start and kept current by `mute`
//! and `unmute` (on every node of a cluster), so that a send checks it without a read.

use std::sync::Arc;

use chat_proto::UserId;
use dashmap::DashMap;

/// Users muted, with the time their mute ends (ms since the epoch). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Mutes {
    until: Arc<DashMap<UserId, i64>>,
}

impl Mutes {
    pub fn new(entries: impl IntoIterator<Item = (UserId, i64)>) -> Mutes {
        let mutes = Mutes::default();
        for (user, until) in entries {
            mutes.set(user, until);
        }
        mutes
    }

    /// Mutes `user` until `until_ms`; 0 (or a time past) unmutes.
    pub fn set(&self, user: UserId, until_ms: i64) {
        if until_ms > 0 {
            self.until.insert(user, until_ms);
        } else {
            self.until.remove(&user);
        }
    }

    /// Until when `user` is muted, if it is at `now_ms`.
    pub fn muted_until(&self, user: UserId, now_ms: i64) -> Option<i64> {
        let until = *self.until.get(&user)?;
        if until > now_ms {
            Some(until)
        } else {
            self.until.remove_if(&user, |_, u| *u <= now_ms);
            None
        }
    }
}
