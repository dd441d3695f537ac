//! Values shared by requests, replies and events.

use serde::{Deserialize, Serialize};

use crate::{ConvId, GroupId, MsgId, Seq, UserId};

/// A user as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub name: String,
}

/// A friend, with whether it is online now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Friend {
    pub id: UserId,
    pub name: String,
    pub online: bool,
}

/// A member's role in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Made the group; the only one who may delete it.
    Creator,
    /// Named by the creator: may invite and remove members.
    Admin,
    /// Joined the group.
    Member,
}

impl Role {
    /// The role as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Creator => "creator",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    /// Parses a stored role.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "creator" => Some(Role::Creator),
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

/// A member of a group, with role and online state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: UserId,
    pub name: String,
    pub role: Role,
    pub online: bool,
}

/// A group, with the caller's role in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupBrief {
    pub id: GroupId,
    pub name: String,
    pub desc: String,
    pub role: Role,
    /// Anyone may join; otherwise by invitation only.
    #[serde(default)]
    pub open: bool,
    /// New members see the history from before they joined.
    #[serde(default)]
    pub shared_history: bool,
}

/// An invitation into a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    pub group: GroupId,
    pub name: String,
    pub desc: String,
    /// Who invited.
    pub by: User,
}

/// A group with its members, as in the login reply and the `groups` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub id: GroupId,
    pub name: String,
    pub desc: String,
    /// The caller's role.
    pub role: Role,
    /// Anyone may join; otherwise by invitation only.
    #[serde(default)]
    pub open: bool,
    /// New members see the history from before they joined.
    #[serde(default)]
    pub shared_history: bool,
    /// How many members the group has.
    #[serde(default)]
    pub member_count: i64,
    /// The first [`INLINE_MEMBERS`] members by id (all of them in a small group); the
    /// rest with `group_members`.
    pub members: Vec<Member>,
}

/// The most members a group lists in the login reply and in `groups`.
pub const INLINE_MEMBERS: usize = 20;

/// The id and time the server gave a message, as in the reply to `send` and `group_send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgRef {
    pub id: MsgId,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    /// The conversation the message belongs to.
    #[serde(default)]
    pub conv: ConvId,
    /// Its place in the conversation.
    #[serde(default)]
    pub seq: Seq,
}

/// A message, as in the `msg` event and in history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Msg {
    pub id: MsgId,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    pub from: UserId,
    pub from_name: String,
    pub text: String,
    /// The recipient of a one-to-one message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<UserId>,
    /// The group of a group message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
    /// The conversation the message belongs to.
    #[serde(default)]
    pub conv: ConvId,
    /// Its place in the conversation: 1, 2, 3, ... without gaps.
    #[serde(default)]
    pub seq: Seq,
}

/// What a conversation is between.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConvWith {
    /// One-to-one with this user.
    Direct { peer: Friend },
    /// A group the caller is a member of.
    Group { group: GroupId, name: String },
}

/// One entry of the `conversations` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvSummary {
    pub conv: ConvId,
    #[serde(flatten)]
    pub with: ConvWith,
    /// The newest message the caller may see, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Msg>,
    /// The conversation's newest seq.
    pub last_seq: Seq,
    /// The caller's read cursor: every message up to it is read.
    pub read: Seq,
    /// Messages after the read cursor, not counting the caller's own (capped at
    /// [`UNREAD_CAP`]).
    pub unread: i64,
    /// One-to-one: the peer's read cursor (read receipts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_read: Option<Seq>,
}

/// The most unread messages counted per conversation: a client shows "999+" past it.
pub const UNREAD_CAP: i64 = 9999;

/// A position in one conversation, as `sync` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvPos {
    pub conv: ConvId,
    pub seq: Seq,
}
