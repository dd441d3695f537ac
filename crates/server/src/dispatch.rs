//! The dispatcher: turns the commit log into deliveries to this node's sessions, in
//! commit order.
//!
//! On one node the log is in commit order and this one task delivers it in that order, so
//! every session receives each conversation's messages in seq order. In a cluster a
//! node's dispatcher gets its own node's commits and, from Redis, the messages of the
//! users and groups it holds sessions of ([`crate::cluster`]); a session puts each
//! conversation back in order itself (see `delivered.rs`).
//!
//! It keeps the member lists of groups it has seen, loaded from the store on first use and
//! kept current by the joins, leaves and deletions in the same stream, and gives a group
//! message to the members who joined before its seq.

use std::collections::HashMap;
use std::sync::Arc;

use chat_proto::{GroupId, Seq, UserId};

use crate::hub::{Frame, Hub};
use crate::store::{Commit, CommitLog, Store};

/// Runs until the commit log closes (the store has stopped).
pub async fn run(mut log: CommitLog, store: Arc<dyn Store>, hub: Hub) {
    // Group id -> (member, the seq after which messages are for it). Loaded on first use,
    // which may be after later joins committed: the seq keeps those out of older messages.
    let mut groups: HashMap<GroupId, Vec<(UserId, Seq)>> = HashMap::new();
    while let Some(batch) = log.recv().await {
        for commit in batch.commits {
            match commit {
                Commit::Msg(msg) => {
                    let frame = Frame::msg(
                        msg.id,
                        msg.conv,
                        msg.seq,
                        msg.ts,
                        chat_proto::event::msg_json(&msg),
                    );
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
                            if *user != msg.from && *after < msg.seq {
                                hub.deliver(*user, &frame);
                            }
                        }
                    }
                }
                Commit::Joined { group, user, seq } => {
                    if let Some(members) = groups.get_mut(&group) {
                        if !members.iter().any(|(m, _)| *m == user) {
                            members.push((user, seq));
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
                Commit::ForgetGroup { group } => {
                    groups.remove(&group);
                }
            }
        }
    }
}
