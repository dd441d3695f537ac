//! The dispatcher: turns the store's commit log into deliveries, in commit order.
//!
//! Because the log is in commit order and this one task publishes it in that order, every
//! session receives messages in increasing id order, which is what lets a single ack
//! cursor per user stand for "everything up to here is delivered".
//!
//! It keeps the member lists of groups it has seen, loaded from the store on first use and
//! kept current by the joins, leaves and deletions in the same log, so a group message
//! goes to exactly the members at the time it committed.

use std::collections::HashMap;
use std::sync::Arc;

use chat_proto::{Event, GroupId, UserId};

use crate::bus::Bus;
use crate::hub::Frame;
use crate::store::{Commit, CommitLog, Store};

/// Runs until the commit log closes (the store has stopped).
pub async fn run(mut log: CommitLog, store: Arc<dyn Store>, bus: Arc<dyn Bus>) {
    let mut groups: HashMap<GroupId, Vec<UserId>> = HashMap::new();
    while let Some(commit) = log.recv().await {
        match commit {
            Commit::Msg(msg) => {
                let frame = Frame::msg(msg.id, Event::Msg((*msg).clone()).to_json().into_bytes());
                if let Some(to) = msg.to {
                    bus.publish(&[to], frame);
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
                    // The sender is the only member left out; skip it without copying.
                    let sender = msg.from;
                    match members.iter().position(|m| *m == sender) {
                        Some(at) => {
                            bus.publish(&members[..at], frame.clone());
                            bus.publish(&members[at + 1..], frame);
                        }
                        None => bus.publish(members, frame),
                    }
                }
            }
            Commit::Joined { group, user } => {
                if let Some(members) = groups.get_mut(&group) {
                    if !members.contains(&user) {
                        members.push(user);
                    }
                }
            }
            Commit::Left { group, user } => {
                if let Some(members) = groups.get_mut(&group) {
                    members.retain(|m| *m != user);
                }
            }
            Commit::GroupDeleted { group } => {
                groups.remove(&group);
            }
        }
    }
}
