//! Replies: exactly one per request, `{"rid": ..., "ok": true, ...fields}` or
//! `{"rid": ..., "ok": false, "error": {"code", "message"}}`.
//!
//! The body types below are the fields of a successful reply; [`ok_frame`] and
//! [`error_frame`] write whole frames (with the trailing `\n`).

use serde::{Deserialize, Serialize};

use crate::error::{ErrorBody, ErrorCode};
use crate::request::Rid;
use crate::types::{ConvSummary, Friend, GroupBrief, GroupInfo, Member, Msg, MsgRef, User};
use crate::{ConvId, MsgId, Seq};

/// A reply with no fields beyond `rid` and `ok`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// `register`, `whoami`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserReply {
    pub user: User,
}

/// `change_password`: the caller's new token when every earlier one was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePasswordReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The most friends a login reply lists.
pub const LOGIN_FRIENDS: usize = 200;
/// The most groups a login reply lists.
pub const LOGIN_GROUPS: usize = 200;

/// `login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginReply {
    pub user: User,
    /// Resumes the session without a password (`login` with `token`) until it expires or
    /// the user logs out.
    pub token: String,
    /// The first [`LOGIN_FRIENDS`] friends by id; `friends_more` says there are more
    /// (page through them with `friends`).
    pub friends: Vec<Friend>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub friends_more: bool,
    /// The first [`LOGIN_GROUPS`] groups by id, each with its first
    /// [`crate::types::INLINE_MEMBERS`] members; `groups_more` says there are more.
    pub groups: Vec<GroupInfo>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub groups_more: bool,
    /// Whether the user may use the admin ops.
    #[serde(default)]
    pub admin: bool,
}

/// `mute`: until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MuteReply {
    /// Milliseconds since the Unix epoch.
    pub until: i64,
}

/// `users`: who is online now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersReply {
    pub users: Vec<User>,
}

/// `add_friend`: `friend` when the two are friends now (the other had asked), or
/// `requested` when a request went to the other user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FriendReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friend: Option<Friend>,
    #[serde(default)]
    pub requested: bool,
}

/// `friend_requests`: requests to the caller, and the caller's own not yet answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FriendRequestsReply {
    pub incoming: Vec<User>,
    pub outgoing: Vec<User>,
}

/// `blocked`: whom the caller blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedReply {
    pub users: Vec<User>,
}

/// `invites`: the caller's invitations into groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitesReply {
    pub invites: Vec<crate::types::Invite>,
}

/// `friends`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FriendsReply {
    pub friends: Vec<Friend>,
    /// More follow: ask again with `after` = the last id of this page.
    #[serde(default)]
    pub more: bool,
}

/// `send`, `group_send`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgReply {
    pub msg: MsgRef,
}

/// `create_group`, `join_group`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupReply {
    pub group: GroupBrief,
}

/// `groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupsReply {
    pub groups: Vec<GroupInfo>,
    /// More follow: ask again with `after` = the last id of this page.
    #[serde(default)]
    pub more: bool,
}

/// `group_members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersReply {
    pub members: Vec<Member>,
    /// More follow: ask again with `after` = the last id of this page.
    #[serde(default)]
    pub more: bool,
}

/// `history`: oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryReply {
    pub messages: Vec<Msg>,
}

/// `conversations`: most recent first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationsReply {
    pub conversations: Vec<ConvSummary>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<MsgId>,
}

/// `read`: the read cursor after the request (it never moves back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadReply {
    pub conv: ConvId,
    pub read: Seq,
}

/// `sync`: what follows the given positions, oldest first per conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReply {
    pub messages: Vec<Msg>,
    /// Some were left out past `limit`: ask again from the last ones received.
    pub more: bool,
}

/// `echo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoReply {
    pub text: String,
}

/// A successful reply frame, `{"rid":R,"ok":true,...body}\n`. `body` must serialize
/// to a JSON object.
pub fn ok_frame<T: Serialize>(rid: &Rid, body: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"{\"rid\":");
    out.extend_from_slice(rid.as_json().as_bytes());
    out.extend_from_slice(b",\"ok\":true");
    // Splice the body's fields in after `ok`: `{"a":1}` becomes `,"a":1}`.
    let start = out.len();
    if serde_json::to_writer(&mut out, body).is_ok() && out.len() > start + 2 {
        out[start] = b',';
    } else {
        out.truncate(start);
        out.push(b'}');
    }
    out.push(b'\n');
    out
}

/// A failed reply frame, `{"rid":R,"ok":false,"error":{...}}\n`.
pub fn error_frame(rid: &Rid, code: ErrorCode, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(b"{\"rid\":");
    out.extend_from_slice(rid.as_json().as_bytes());
    out.extend_from_slice(b",\"ok\":false,\"error\":");
    let body = ErrorBody {
        code,
        message: message.to_string(),
    };
    // Serializing a plain struct of strings cannot fail.
    let _ = serde_json::to_writer(&mut out, &body);
    out.extend_from_slice(b"}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_ok_frames_with_and_without_fields() {
        let rid = Rid::number(4);
        let frame = ok_frame(&rid, &EchoReply { text: "x".into() });
        assert_eq!(frame, b"{\"rid\":4,\"ok\":true,\"text\":\"x\"}\n");
        assert_eq!(
            ok_frame(&Rid::NONE, &Empty {}),
            b"{\"rid\":null,\"ok\":true}\n"
        );
    }

    #[test]
    fn writes_error_frames() {
        let frame = error_frame(&Rid::number(1), ErrorCode::NotFound, "no such user");
        let v: serde_json::Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["rid"], 1);
        assert_eq!(v["error"]["code"], "not_found");
        assert_eq!(v["error"]["message"], "no such user");
    }
}
