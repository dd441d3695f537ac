//! Storage behind one interface: users, tokens, friendships, groups and messages.
//!
//! [`Store`] is what the ops call; [`sqlite::SqliteStore`] is the embedded implementation,
//! [`postgres::PgStore`] the shared one that the nodes of a cluster use.
//! Every write that changes who receives what (a message, a join, a leave, a deletion)
//! is also announced, after it commits and in commit order, on the [`CommitLog`]: the
//! dispatcher turns that log into deliveries, so a recipient sees messages in id order.
//!
//! Every message belongs to a **conversation** (a pair of users, or a group) and has a
//! `seq` in it: 1, 2, 3, ... without gaps, in commit order. Pending messages are not rows
//! of their own: each member of a conversation has two cursors in it, *delivered* (moved
//! by acks) and *read* (moved by `read`). A message is pending for a user while its seq
//! is above the user's delivered cursor in its conversation (and, in a group, above the
//! seq at which the user joined), and it is not the user's own.

pub mod postgres;
pub mod sqlite;
mod writes;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chat_proto::types::{ConvPos, ConvSummary, Invite, Msg, Role, User};
use chat_proto::{ConvId, GroupId, MsgId, Seq, UserId};
use tokio::sync::mpsc;

/// Why a store operation failed. The messages are safe to show to a client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    Conflict(&'static str),
    /// The store cannot be reached or written now; the detail is for the log only.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// An unexpected failure; the detail is for the log only.
    #[error("store failure: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What a password login needs to know about a user.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: User,
    /// The argon2id hash in PHC string form.
    pub password_hash: String,
}

/// A group as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    pub id: GroupId,
    pub name: String,
    pub desc: String,
    pub settings: GroupSettings,
}

/// Who may join a group, and what a new member sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupSettings {
    /// Anyone may join (else only those invited).
    pub open: bool,
    /// New members see the history from before their join.
    pub shared_history: bool,
}

/// What `add_friend` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Befriended {
    /// The other user had asked: the two are friends now.
    Friends(User),
    /// A request went to the other user.
    Requested(User),
}

/// A group with the caller's role and every member.
#[derive(Debug, Clone)]
pub struct GroupWithMembers {
    pub group: GroupRow,
    pub role: Role,
    /// How many members the group has.
    pub member_count: i64,
    /// Its first members by id, as many as the read asked for ([`GroupsPage::members`]).
    pub members: Vec<(User, Role)>,
}

/// Which of a user's groups a read returns: those with an id above `after`, at most
/// `limit`, each with up to `members` members. A user may be in thousands of groups of
/// thousands: no reply carries all of that.
#[derive(Debug, Clone, Copy)]
pub struct GroupsPage {
    pub after: GroupId,
    pub limit: usize,
    pub members: usize,
}

/// What a session needs at login: friends and groups with members.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub friends: Vec<User>,
    /// The page of groups asked for.
    pub groups: Vec<GroupWithMembers>,
    /// Every group the user is in (a cluster node listens to each one's channel).
    pub group_ids: Vec<GroupId>,
    /// Whether the operator made the user an admin.
    pub admin: bool,
}

/// Which conversation a history request reads.
#[derive(Debug, Clone, Copy)]
pub enum Conversation {
    /// One-to-one between the caller and this user.
    With(UserId),
    /// A group the caller is a member of.
    Group(GroupId),
}

/// The conversation of two users: `(smaller id << 32) | larger id`, always positive.
/// (User ids stay below 2^31.)
pub fn direct_conv(a: UserId, b: UserId) -> ConvId {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    (lo << 32) | hi
}

/// The conversation of a group: the group id, negated (group ids are never reused).
pub fn group_conv(group: GroupId) -> ConvId {
    -group
}

impl Conversation {
    /// The conversation `conv` as `user` sees it: `None` if it cannot be one of the
    /// user's (a pair without the user in it, or not a conversation id at all). Group
    /// membership is for the store to check.
    pub fn of(user: UserId, conv: ConvId) -> Option<Conversation> {
        if conv < 0 {
            return Some(Conversation::Group(-conv));
        }
        let (lo, hi) = (conv >> 32, conv & 0xFFFF_FFFF);
        match () {
            _ if lo == user && hi != user && hi > lo => Some(Conversation::With(hi)),
            _ if hi == user && lo != user && lo > 0 && lo < hi => Some(Conversation::With(lo)),
            _ => None,
        }
    }

    /// Its conversation id, between `user` and the peer or in the group.
    pub fn id(self, user: UserId) -> ConvId {
        match self {
            Conversation::With(peer) => direct_conv(user, peer),
            Conversation::Group(group) => group_conv(group),
        }
    }
}

/// A `read` that moved a read cursor: who gets a `read` event for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadMark {
    /// The read cursor now (it never moves back).
    pub read: Seq,
    /// Whether it moved.
    pub moved: bool,
    /// Who is told: the peer of a one-to-one conversation; in a group, the senders of the
    /// messages the read covered (not every member: see ARCHITECTURE.md).
    pub notify: Vec<UserId>,
}

/// A committed change that affects delivery, announced in commit order.
///
/// Every change in the log has a message id of its own: a membership change takes one
/// too (with no message under it), so that every batch covers a non-empty id range and
/// batches are ordered by their ranges alone.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Commit {
    /// A message; `msg.to` or `msg.group` says who gets it.
    Msg(Arc<Msg>),
    /// A user joined a group when its last seq was `seq`; only later messages are for
    /// the user.
    Joined {
        group: GroupId,
        user: UserId,
        seq: Seq,
    },
    /// A user left a group at id `at`.
    Left {
        group: GroupId,
        user: UserId,
        at: MsgId,
    },
    /// A group was deleted at id `at`.
    GroupDeleted { group: GroupId, at: MsgId },
    /// Not stored nor published: tells a dispatcher to forget the member lists it keeps,
    /// after it missed changes (a gap in a cluster's log filled from the store).
    ForgetGroups,
    /// Not stored nor published: tells a dispatcher to forget one group's member list (a
    /// cluster node that subscribes to a group again reloads it).
    ForgetGroup { group: GroupId },
}

/// The changes of one committed transaction. Batches are contiguous in message ids: a
/// batch's messages have ids `after + 1 ..= last` (none when `after == last`), and the
/// next batch's `after` is this one's `last`. So a reader can tell a gap from a batch
/// that assigned no ids, and fill a gap from the store.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CommitBatch {
    pub after: MsgId,
    pub last: MsgId,
    pub commits: Vec<Commit>,
}

/// The receiving end of the commit log: batches in commit order.
pub type CommitLog = mpsc::Receiver<CommitBatch>;

/// The store's operations. Every method that writes returns after its change committed.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a user; `Conflict` if the name is taken.
    async fn create_user(&self, name: &str, password_hash: &str) -> StoreResult<User>;
    async fn credentials_by_name(&self, name: &str) -> StoreResult<Option<Credentials>>;
    async fn credentials_by_id(&self, id: UserId) -> StoreResult<Option<Credentials>>;
    async fn user(&self, id: UserId) -> StoreResult<Option<User>>;

    /// Stores a session token (by its hash) valid until `expires_ms`.
    async fn create_token(
        &self,
        user: UserId,
        token_hash: &[u8],
        expires_ms: i64,
    ) -> StoreResult<()>;
    /// The user a token belongs to, if it exists and has not expired at `now_ms`.
    async fn token_user(&self, token_hash: &[u8], now_ms: i64) -> StoreResult<Option<User>>;
    async fn delete_token(&self, token_hash: &[u8]) -> StoreResult<()>;
    /// Revokes every session token of `user` ("log out everywhere"); returns how many.
    async fn revoke_tokens(&self, user: UserId) -> StoreResult<u64>;
    /// Replaces `user`'s password hash (`NotFound` for no such user).
    async fn set_password(&self, user: UserId, password_hash: &str) -> StoreResult<()>;

    /// Asks `friend` to be friends, or accepts its request if it made one; `NotFound`,
    /// `Conflict` (already friends, or already asked), `Forbidden` (either blocks the
    /// other).
    async fn add_friend(&self, user: UserId, friend: UserId) -> StoreResult<Befriended>;
    /// Ends a friendship both ways, or withdraws the user's request to `friend`;
    /// `NotFound` if there was neither.
    async fn remove_friend(&self, user: UserId, friend: UserId) -> StoreResult<()>;
    /// Declines `from`'s request; `NotFound` if there is none.
    async fn decline_friend(&self, user: UserId, from: UserId) -> StoreResult<()>;
    /// Requests to the user, and the user's own not answered yet (each oldest first).
    async fn friend_requests(&self, user: UserId) -> StoreResult<(Vec<User>, Vec<User>)>;
    /// `user` blocks `other`: ends their friendship and requests both ways. Returns
    /// whether they were friends. `NotFound`, `Conflict` (already blocked).
    async fn block(&self, user: UserId, other: UserId) -> StoreResult<bool>;
    /// `NotFound` if `user` does not block `other`.
    async fn unblock(&self, user: UserId, other: UserId) -> StoreResult<()>;
    /// Whom the user blocks.
    async fn blocked(&self, user: UserId) -> StoreResult<Vec<User>>;
    /// Every block, as (who blocks, whom): loaded into memory at start.
    async fn blocks(&self) -> StoreResult<Vec<(UserId, UserId)>>;
    async fn friend_ids(&self, user: UserId) -> StoreResult<Vec<UserId>>;
    async fn friends(&self, user: UserId) -> StoreResult<Vec<User>>;

    async fn create_group(
        &self,
        creator: UserId,
        name: &str,
        desc: &str,
        settings: GroupSettings,
    ) -> StoreResult<GroupRow>;
    /// Joins an open group the user was not removed from, or any group the user is
    /// invited into (the invitation is used up). `NotFound` (no such group, or closed to
    /// the user: the same answer, so that closed groups cannot be told from none),
    /// `Conflict` (already a member).
    async fn join_group(&self, group: GroupId, user: UserId) -> StoreResult<GroupRow>;
    /// Invites `user` into the group (by its creator or an admin of it); lifts a removal.
    /// `NotFound`, `Forbidden` (not allowed to invite, or the user blocks the inviter),
    /// `Conflict` (already a member).
    async fn group_invite(&self, group: GroupId, by: UserId, user: UserId)
        -> StoreResult<GroupRow>;
    /// `NotFound` if the user has no invitation into the group.
    async fn decline_invite(&self, group: GroupId, user: UserId) -> StoreResult<()>;
    /// The user's invitations, oldest first.
    async fn invites(&self, user: UserId) -> StoreResult<Vec<Invite>>;
    /// The creator makes a member an admin of the group, or a member again;
    /// `NotFound`, `Forbidden`.
    async fn set_group_role(
        &self,
        group: GroupId,
        by: UserId,
        user: UserId,
        role: Role,
    ) -> StoreResult<()>;
    /// `NotFound`, `Forbidden` (not a member, or the creator).
    async fn leave_group(&self, group: GroupId, user: UserId) -> StoreResult<()>;
    /// Deletes a group and returns who was in it; `NotFound`, `Forbidden` (not the creator).
    async fn delete_group(&self, group: GroupId, user: UserId) -> StoreResult<Vec<UserId>>;
    /// The members of a group with roles; `NotFound` if there is no such group.
    async fn group_members(&self, group: GroupId) -> StoreResult<Vec<(User, Role)>>;
    /// A page of a group's members by id for `viewer`, who must be one (`Forbidden`
    /// otherwise; `NotFound` for no such group): those above `after`, at most `limit`.
    async fn group_members_page(
        &self,
        group: GroupId,
        viewer: UserId,
        after: UserId,
        limit: usize,
    ) -> StoreResult<Vec<(User, Role)>>;
    /// The members of a group, each with the group's last seq when it joined.
    async fn group_member_ids(&self, group: GroupId) -> StoreResult<Vec<(UserId, Seq)>>;
    async fn user_groups(
        &self,
        user: UserId,
        page: GroupsPage,
    ) -> StoreResult<Vec<GroupWithMembers>>;
    /// What a login needs: every friend (their presence is announced), the first page of
    /// groups, the admin flag.
    async fn snapshot(&self, user: UserId, groups: GroupsPage) -> StoreResult<Snapshot>;

    /// Stores a one-to-one message; `NotFound` if the recipient does not exist. With a
    /// `cmid` the sender used in the last 24 hours, stores nothing and returns the
    /// message first sent with it.
    async fn send(
        &self,
        from: &User,
        to: UserId,
        text: &str,
        cmid: Option<&str>,
    ) -> StoreResult<Arc<Msg>>;
    /// Stores a group message; `NotFound`, `Forbidden` (not a member). `cmid` as in
    /// [`Store::send`].
    async fn group_send(
        &self,
        from: &User,
        group: GroupId,
        text: &str,
        cmid: Option<&str>,
    ) -> StoreResult<Arc<Msg>>;
    /// A page of a conversation, oldest first, of messages older than `before`.
    async fn history(
        &self,
        user: UserId,
        conversation: Conversation,
        before: Option<MsgId>,
        limit: usize,
    ) -> StoreResult<Vec<Msg>>;
    /// Messages pending for `user`, sent after `since_ms` (older ones have expired from
    /// delivery): per conversation, those above its delivered cursor and above the seq
    /// the caller already has in `known`. Each conversation's come in seq order and
    /// without a hole (a page holds a prefix of each), roughly oldest first overall.
    async fn pending(
        &self,
        user: UserId,
        known: &HashMap<ConvId, Seq>,
        since_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<Msg>>;
    /// The messages of `conv` (the user's) with a seq in `after + 1 .. before`, in seq
    /// order, the user's own included; with `after` unknown, from the user's delivered
    /// cursor (in a group, at least the seq at which it joined). To fill a gap.
    async fn fill(
        &self,
        user: UserId,
        conv: ConvId,
        after: Option<Seq>,
        before: Seq,
        limit: usize,
    ) -> StoreResult<Vec<Msg>>;
    /// Moves the user's delivered cursor in `conv` up to `seq` (never down, never past
    /// the conversation's last seq). Written in bulk within a fraction of a second.
    async fn ack(&self, user: UserId, conv: ConvId, seq: Seq) -> StoreResult<()>;
    /// Moves the user's read cursor in `conv` up to `seq` (never down, never past the last
    /// seq; the delivered cursor follows). `NotFound` for a conversation that is not the
    /// user's.
    async fn mark_read(&self, user: UserId, conv: ConvId, seq: Seq) -> StoreResult<ReadMark>;
    /// A page of the user's conversations, most recent first, whose last activity is
    /// older than message id `before`. Presence (`online`) is left false for the caller.
    async fn conversations(
        &self,
        user: UserId,
        before: Option<MsgId>,
        limit: usize,
    ) -> StoreResult<Vec<(MsgId, ConvSummary)>>;
    /// The members of `conv` other than `user`, and its group if it is one; `NotFound`
    /// for a conversation that is not the user's.
    async fn conv_peers(
        &self,
        user: UserId,
        conv: ConvId,
    ) -> StoreResult<(Option<GroupId>, Vec<UserId>)>;
    /// What follows each position, oldest first per conversation, at most `limit`
    /// messages; whether some were left out. Conversations not the user's are skipped.
    async fn sync(
        &self,
        user: UserId,
        positions: &[ConvPos],
        limit: usize,
    ) -> StoreResult<(Vec<Msg>, bool)>;

    /// Makes the user named `name` an admin, or not; `NotFound` if there is none.
    async fn set_admin(&self, name: &str, admin: bool) -> StoreResult<User>;
    async fn is_admin(&self, user: UserId) -> StoreResult<bool>;
    /// Mutes a user until `until_ms` (0: not muted); `NotFound` if there is none.
    async fn set_muted_until(&self, user: UserId, until_ms: i64) -> StoreResult<()>;
    /// Users muted past `now_ms`, with the end of their mute.
    async fn mutes(&self, now_ms: i64) -> StoreResult<Vec<(UserId, i64)>>;
    /// A group's creator or admin `by` removes `member` (an admin only members), who
    /// stays out until invited again; `NotFound`, `Forbidden`. Announced on the commit
    /// log as the member leaving.
    async fn group_kick(&self, group: GroupId, by: UserId, member: UserId) -> StoreResult<()>;
    /// Deletes up to `chunk` messages sent before `before_ms`; returns how many it deleted.
    async fn purge_history(&self, before_ms: i64, chunk: usize) -> StoreResult<u64>;

    /// Commits what is queued and stops writing. Later writes fail with `Unavailable`.
    async fn close(&self);
}

/// Merges per-conversation lists (each in seq order) into one, at most `limit` long,
/// taking the oldest head (by id) first: each conversation keeps its order and what is
/// left out of one is a suffix.
pub(crate) fn merge_by_conversation(mut lists: Vec<Vec<Msg>>, limit: usize) -> Vec<Msg> {
    let mut heads: Vec<std::collections::VecDeque<Msg>> = lists.drain(..).map(Into::into).collect();
    let mut out = Vec::new();
    while out.len() < limit {
        let next = heads
            .iter()
            .enumerate()
            .filter_map(|(i, list)| list.front().map(|m| (m.id, i)))
            .min();
        let Some((_, i)) = next else {
            break;
        };
        if let Some(msg) = heads[i].pop_front() {
            out.push(msg);
        }
    }
    out
}
