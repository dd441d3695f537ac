//! Which Redis channels this node listens to, and the messages routed through them.
//!
//! A message is published once, on the channel of its recipient (`<prefix>u:<user>`) or
//! of its group (`<prefix>g:<group>`), and Redis hands it only to the nodes subscribed
//! there: the node holding the recipient's session, or every node holding a session of a
//! member. A node subscribes to a user's channel and to the user's groups' channels at
//! login, before the session reads what is pending (so nothing committed in between is
//! missed), and to a group's channel when one of its users joins or creates it; it
//! unsubscribes when the last of its sessions that needed a channel ends. Joins, leaves
//! and deletions go on the group's channel too, so every node that delivers a group's
//! messages keeps its member list current; a node that subscribes to a group again
//! forgets the list it had and reloads it.
//!
//! Subscribing and unsubscribing go through one task (`run`), which brings Redis's
//! subscriptions in line with the reference counts here, so a subscribe and an
//! unsubscribe of one channel cannot overtake each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chat_proto::{GroupId, UserId};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::store::Commit;

/// Commits routed to other nodes on one channel, with the node that committed them.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Routed {
    pub(crate) node: String,
    pub(crate) commits: Vec<Commit>,
}

/// A request to the subscriber task: bring these channels in line, then answer.
pub(crate) struct Reconcile {
    pub(crate) channels: Vec<String>,
    pub(crate) done: Option<oneshot::Sender<()>>,
}

/// The channels this node needs, counted by the sessions that need them.
#[derive(Debug, Default)]
struct Needs {
    count: HashMap<String, usize>,
    /// The channels each local user's session added, to give back at its end.
    by_user: HashMap<UserId, Vec<String>>,
}

/// The reference counts and the way to the subscriber task.
pub(crate) struct Channels {
    prefix: String,
    needs: Mutex<Needs>,
    requests: mpsc::UnboundedSender<Reconcile>,
}

impl Channels {
    pub(crate) fn new(prefix: &str) -> (Arc<Channels>, mpsc::UnboundedReceiver<Reconcile>) {
        let (requests, rx) = mpsc::unbounded_channel();
        let channels = Arc::new(Channels {
            prefix: prefix.to_string(),
            needs: Mutex::new(Needs::default()),
            requests,
        });
        (channels, rx)
    }

    fn needs(&self) -> std::sync::MutexGuard<'_, Needs> {
        self.needs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn user(&self, user: UserId) -> String {
        format!("{}u:{user}", self.prefix)
    }

    pub(crate) fn group(&self, group: GroupId) -> String {
        format!("{}g:{group}", self.prefix)
    }

    /// The group a channel is of, if it is a group's.
    pub(crate) fn group_of(&self, channel: &str) -> Option<GroupId> {
        channel
            .strip_prefix(&self.prefix)?
            .strip_prefix("g:")?
            .parse()
            .ok()
    }

    /// Whether a channel carries routed messages (a user's or a group's).
    pub(crate) fn is_routed(&self, channel: &str) -> bool {
        channel
            .strip_prefix(&self.prefix)
            .is_some_and(|rest| rest.starts_with("u:") || rest.starts_with("g:"))
    }

    /// `user`'s session here needs its own channel and its groups'; the answer comes
    /// once Redis has them.
    pub(crate) fn listen(&self, user: UserId, groups: &[GroupId]) -> oneshot::Receiver<()> {
        let mut wanted = Vec::with_capacity(groups.len() + 1);
        {
            let mut needs = self.needs();
            let mine = needs.by_user.entry(user).or_default();
            let mut added = Vec::new();
            let own = self.user(user);
            if !mine.contains(&own) {
                added.push(own);
            }
            for group in groups {
                let channel = self.group(*group);
                if !mine.contains(&channel) && !added.contains(&channel) {
                    added.push(channel);
                }
            }
            mine.extend(added.iter().cloned());
            for channel in added {
                let count = needs.count.entry(channel.clone()).or_insert(0);
                *count += 1;
                wanted.push(channel);
            }
        }
        let (tx, rx) = oneshot::channel();
        let _ = self.requests.send(Reconcile {
            channels: wanted,
            done: Some(tx),
        });
        rx
    }

    /// `user`'s session here ended: gives back the channels it needed.
    pub(crate) fn forget(&self, user: UserId) {
        let released = {
            let mut needs = self.needs();
            let mine = needs.by_user.remove(&user).unwrap_or_default();
            for channel in &mine {
                if let Some(count) = needs.count.get_mut(channel) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        needs.count.remove(channel);
                    }
                }
            }
            mine
        };
        if !released.is_empty() {
            let _ = self.requests.send(Reconcile {
                channels: released,
                done: None,
            });
        }
    }

    /// Whether this node needs `channel` now.
    pub(crate) fn needed(&self, channel: &str) -> bool {
        self.needs().count.contains_key(channel)
    }

    /// Every channel this node needs now (to subscribe again after a reconnect).
    pub(crate) fn all(&self) -> Vec<String> {
        self.needs().count.keys().cloned().collect()
    }
}
