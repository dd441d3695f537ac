//! Who blocks whom: loaded from the store at start and kept current by `block` and
//! `unblock` (on every node of a cluster, through Redis), so that a send checks it
//! without a read. A node that loses Redis reloads the whole set from the store when it
//! is back: changes published meanwhile never reached it.

use std::collections::HashSet;
use std::sync::Arc;

use chat_proto::UserId;
use dashmap::DashSet;

/// Pairs (who blocks, whom). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Blocks {
    pairs: Arc<DashSet<(UserId, UserId)>>,
}

impl Blocks {
    pub fn new(pairs: impl IntoIterator<Item = (UserId, UserId)>) -> Blocks {
        let blocks = Blocks::default();
        for (user, other) in pairs {
            blocks.set(user, other, true);
        }
        blocks
    }

    /// `user` blocks `other` (`on`), or no longer does.
    pub fn set(&self, user: UserId, other: UserId, on: bool) {
        if on {
            self.pairs.insert((user, other));
        } else {
            self.pairs.remove(&(user, other));
        }
    }

    /// Makes the set exactly `pairs` (a node that lost Redis may have missed changes),
    /// without a moment in which a pair in both the old and the new set is missing.
    pub fn replace(&self, pairs: impl IntoIterator<Item = (UserId, UserId)>) {
        let new: HashSet<(UserId, UserId)> = pairs.into_iter().collect();
        self.pairs.retain(|pair| new.contains(pair));
        for pair in new {
            self.pairs.insert(pair);
        }
    }

    /// Whether `to` blocks `from`: what `from` sends to `to` is refused.
    pub fn refuses(&self, to: UserId, from: UserId) -> bool {
        !self.pairs.is_empty() && self.pairs.contains(&(to, from))
    }
}
