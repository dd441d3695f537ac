//! The dispatcher: turns the commit log into deliveries to this node's sessions, in
//! commit order.
//!
//! Because the log is in commit order and this one task delivers it in that order, every
//! session receives messages in increasing id order, which is what lets a single ack
//! cursor per user stand for "everything up to here is delivered". In a cluster every
//! node runs a dispatcher over the whole log (put in order by [`crate::cluster`]) and
//! delivers to the sessions it holds.
//!
//! It keeps the member lists of groups it has seen, loaded from the store on first use and
//! kept current by the joins, leaves and deletions in the same log, so a group message
//! goes to exactly the members at the time it committed.

use std::collections::HashMap;
use std::sync::Arc;

use chat_proto::{GroupId, MsgId, UserId};

use crate::hub::{Frame, Hub};
use crate::store::{Commit, CommitLog, Store};

/// Runs until the commit log closes (the store has stopped).
pub async fn run(mut log: CommitLog, store: Arc<dyn Store>, hub: Hub) {
    // Group id -> (member, id after which messages are for it). Loaded on first use, which
    // may be after later joins committed: the id keeps those out of older messages.
    let mut groups: HashMap<GroupId, Vec<(UserId, MsgId)>> = HashMap::new();
    while let Some(batch) = log.recv().await {
        for commit in batch.commits {
            match commit {
                Commit::Msg(msg) => {
                    let frame =
                        Frame::msg(msg.id, msg.conv, msg.seq, chat_proto::event::msg_json(&msg));
                    if let Some(to) = msg.to {
                        hub.deliver(to, &frame);
                    } else if let Some(group) = msg.group {
                        let members = match groups.get(&group) {
                            Some(members) => members,
                            None => match store.group_member_ids(group).await {
                                Ok(members) => groups.entry(group).or_insert(members),
                                Err(e) => {
                                    // Undelivered now, still pending in the store.
                                    tracing::warn!(error = %e, group, "cannot load group members");
                                    continue;
                                }
                            },
                        };
                        for (user, after) in members {
                            if *user != msg.from && *after < msg.id {
                                hub.deliver(*user, &frame);
                            }
                        }
                    }
                }
                Commit::Joined { group, user, at } => {
                    if let Some(members) = groups.get_mut(&group) {
                        if !members.iter().any(|(m, _)| *m == user) {
                            members.push((user, at));
                        }
                    }
                }
                Commit::Left { group, user, .. } => {
                    if let Some(members) = groups.get_mut(&group) {
                        members.retain(|(m, _)| *m != user);
                    }
                }
                Commit::GroupDeleted { group, .. } => {
                    groups.remove(&group);
                }
                Commit::ForgetGroups => groups.clear(),
            }
        }
    }
}
