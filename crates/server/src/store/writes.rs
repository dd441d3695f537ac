//! What a store's single writer takes from its queue, and the acks it folds in: shared by
//! the SQLite and PostgreSQL stores, whose writers differ only in how they apply a batch.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chat_proto::types::{Msg, User};
use chat_proto::{ConvId, GroupId, Seq, UserId};
use tokio::sync::oneshot;

use super::{GroupRow, GroupSettings, ReadMark, StoreError, StoreResult};

pub(super) type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// One queued write.
pub(super) enum Write {
    CreateUser {
        name: String,
        hash: String,
        reply: Reply<User>,
    },
    CreateToken {
        user: UserId,
        hash: Vec<u8>,
        expires_ms: i64,
        reply: Reply<()>,
    },
    DeleteToken {
        hash: Vec<u8>,
        reply: Reply<()>,
    },
    CreateGroup {
        creator: UserId,
        name: String,
        desc: String,
        settings: GroupSettings,
        reply: Reply<GroupRow>,
    },
    JoinGroup {
        group: GroupId,
        user: UserId,
        reply: Reply<GroupRow>,
    },
    LeaveGroup {
        group: GroupId,
        user: UserId,
        reply: Reply<()>,
    },
    DeleteGroup {
        group: GroupId,
        user: UserId,
        reply: Reply<Vec<UserId>>,
    },
    Send {
        from: User,
        to: UserId,
        text: String,
        cmid: Option<String>,
        reply: Reply<Arc<Msg>>,
    },
    GroupSend {
        from: User,
        group: GroupId,
        text: String,
        cmid: Option<String>,
        reply: Reply<Arc<Msg>>,
    },
    MarkRead {
        user: UserId,
        conv: ConvId,
        seq: Seq,
        reply: Reply<ReadMark>,
    },
    GroupKick {
        group: GroupId,
        by: UserId,
        member: UserId,
        reply: Reply<()>,
    },
    /// Write the acks noted since the last flush.
    FlushAcks,
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// Answers a caller once the batch's fate is known.
pub(super) type Finisher = Box<dyn FnOnce(Option<&StoreError>) + Send>;

pub(super) fn finisher<T: Send + 'static>(reply: Reply<T>, result: StoreResult<T>) -> Finisher {
    Box::new(move |commit_error| {
        let _ = reply.send(match commit_error {
            None => result,
            Some(e) => Err(e.clone()),
        });
    })
}

/// Answers a write that could not run because its transaction could not begin.
pub(super) fn fail(write: Write, error: &StoreError) {
    fn refuse<T>(reply: Reply<T>, error: &StoreError) {
        let _ = reply.send(Err(error.clone()));
    }
    match write {
        Write::CreateUser { reply, .. } => refuse(reply, error),
        Write::CreateToken { reply, .. }
        | Write::DeleteToken { reply, .. }
        | Write::LeaveGroup { reply, .. }
        | Write::GroupKick { reply, .. } => refuse(reply, error),
        Write::CreateGroup { reply, .. } | Write::JoinGroup { reply, .. } => refuse(reply, error),
        Write::DeleteGroup { reply, .. } => refuse(reply, error),
        Write::Send { reply, .. } | Write::GroupSend { reply, .. } => refuse(reply, error),
        Write::MarkRead { reply, .. } => refuse(reply, error),
        Write::FlushAcks => {}
        Write::Close { reply } => drop(reply.send(())),
    }
}

/// Acks noted in memory until the writer writes them: the newest delivered cursor per
/// user and conversation.
///
/// Acks are many (a client acks what it shows) and need not be durable at once: an ack
/// lost in a crash only means the message is delivered again (clients drop a message id
/// they have), never that one is lost. Writing them in bulk, one row per user per
/// interval, keeps them from dominating the writer.
#[derive(Debug, Default)]
pub(super) struct PendingAcks {
    /// Ordered, so that a login finds its user's acks by range.
    cursors: Mutex<BTreeMap<(UserId, ConvId), Seq>>,
}

/// Acks as the writer takes them: (user, conversation) -> delivered seq, in order (two
/// nodes writing the same rows lock them in the same order).
pub(super) type AckMap = BTreeMap<(UserId, ConvId), Seq>;

impl PendingAcks {
    pub(super) fn note(&self, user: UserId, conv: ConvId, seq: Seq) {
        let mut cursors = self.cursors.lock().unwrap_or_else(|e| e.into_inner());
        let cursor = cursors.entry((user, conv)).or_insert(seq);
        *cursor = (*cursor).max(seq);
    }

    /// The acks noted for `user` and not written yet, by conversation.
    pub(super) fn of_user(&self, user: UserId) -> HashMap<ConvId, Seq> {
        let cursors = self.cursors.lock().unwrap_or_else(|e| e.into_inner());
        cursors
            .range((user, ConvId::MIN)..=(user, ConvId::MAX))
            .map(|((_, conv), seq)| (*conv, *seq))
            .collect()
    }

    /// The acks noted for `user`, each raised to what the caller already has in
    /// `known`: the positions from which a catch-up starts.
    pub(super) fn of_user_beside(
        &self,
        user: UserId,
        known: &HashMap<ConvId, Seq>,
    ) -> HashMap<ConvId, Seq> {
        let mut noted = self.of_user(user);
        for (conv, seq) in known {
            let at = noted.entry(*conv).or_insert(*seq);
            *at = (*at).max(*seq);
        }
        noted
    }

    pub(super) fn is_empty(&self) -> bool {
        self.cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// A copy of the noted acks, to write. They stay noted until [`PendingAcks::forget`]
    /// after the commit, so that a login meanwhile still sees them.
    pub(super) fn snapshot(&self) -> AckMap {
        self.cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets the acks written, but for any newer one noted since.
    pub(super) fn forget(&self, written: &AckMap) {
        let mut cursors = self.cursors.lock().unwrap_or_else(|e| e.into_inner());
        for (key, up_to) in written {
            if cursors.get(key).is_some_and(|now| now <= up_to) {
                cursors.remove(key);
            }
        }
    }
}
