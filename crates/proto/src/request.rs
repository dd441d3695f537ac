//! Requests: `{"op": "<name>", "rid": <optional number or string>, ...fields}`.
//!
//! [`parse`] reads one frame in two passes: first the envelope (`op` and `rid`, so that
//! even a request with bad fields gets its `rid` back), then the op's own fields into
//! the op's type. Unknown fields are ignored; missing or mistyped ones are errors.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::types::ConvPos;
use crate::{ConvId, GroupId, MsgId, Seq, UserId};

/// The request id a client chose, echoed verbatim in the reply (`null` when absent).
#[derive(Debug, Clone, Default)]
pub struct Rid(Option<Box<RawValue>>);

impl Rid {
    /// No rid: the reply carries `"rid": null`.
    pub const NONE: Rid = Rid(None);

    /// The rid as JSON text.
    pub fn as_json(&self) -> &str {
        self.0.as_deref().map(RawValue::get).unwrap_or("null")
    }

    /// A numeric rid, as a client library makes them.
    pub fn number(n: u64) -> Rid {
        Rid(RawValue::from_string(n.to_string()).ok())
    }
}

/// Register a new user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    pub name: String,
    pub password: String,
}

/// Log in by `id` or `name` with `password`, or with a `token` from an earlier login.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Change the caller's password: the current one, then the new one. With
/// `logout_everywhere` (the default) every session token of the account is revoked and
/// the caller gets a new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePassword {
    pub password: String,
    pub new_password: String,
    #[serde(default = "yes")]
    pub logout_everywhere: bool,
}

fn yes() -> bool {
    true
}

/// A request naming another user: `add_friend`, `remove_friend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    pub id: UserId,
}

/// A page of a list ordered by id: the items after `after` (from the start without it),
/// at most `limit` of them (default and maximum: see [`Page::limit`]). For `friends`
/// and `groups`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl Page {
    /// The most items one page has.
    pub const MAX: u32 = 500;
    /// A page's size when the request gives none.
    pub const DEFAULT: u32 = 200;

    /// The page size asked for, or the default; `None` when out of range (0 or past
    /// [`Page::MAX`]).
    pub fn limit(&self) -> Option<usize> {
        match self.limit {
            None => Some(Page::DEFAULT as usize),
            Some(n) if (1..=Page::MAX).contains(&n) => Some(n as usize),
            Some(_) => None,
        }
    }
}

/// `group_members`: a page of a group's members, by user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMembers {
    pub group: GroupId,
    #[serde(flatten)]
    pub page: Page,
}

/// A request naming a group: `join_group`, `leave_group`, `delete_group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRef {
    pub group: GroupId,
}

/// Send a one-to-one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Send {
    pub to: UserId,
    pub text: String,
    /// The client's own id for this message (at most 64 characters): a resend with the
    /// same `cmid` within 24 hours gets the first send's reply, not a second message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmid: Option<String>,
}

/// Create a group; the caller becomes its creator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateGroup {
    pub name: String,
    #[serde(default)]
    pub desc: String,
    /// Anyone may join (default: only those invited by the creator or a group admin).
    #[serde(default)]
    pub open: bool,
    /// New members see the messages from before they joined (default: only what comes
    /// after their join).
    #[serde(default)]
    pub shared_history: bool,
}

/// Send a message to a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSend {
    pub group: GroupId,
    pub text: String,
    /// As in [`Send::cmid`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmid: Option<String>,
}

/// Page through a conversation's history, newest backwards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The other user of a one-to-one conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<UserId>,
    /// A group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
    /// A conversation by its id (instead of `with` or `group`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv: Option<ConvId>,
    /// Only messages older than this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<MsgId>,
    /// How many (1 to 100, default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

/// Every message this session received with an id up to `id` is delivered for good; or,
/// with `conv` and `seq`, every message of that conversation up to `seq`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<MsgId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv: Option<ConvId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<Seq>,
}

/// The caller has read `conv` up to `seq`: moves its read cursor (never back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Read {
    pub conv: ConvId,
    pub seq: Seq,
}

/// The caller is typing in `conv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Typing {
    pub conv: ConvId,
}

/// A page of the caller's conversations, most recent first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversations {
    /// Only conversations whose last message is older than this message id (the
    /// `before` of the previous page's reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<MsgId>,
    /// How many (1 to 100, default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

/// What follows the client's own positions: for each `conv`, the messages after `seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sync {
    pub positions: Vec<ConvPos>,
    /// The most messages in the reply (1 to 1000, default 500); `more` says if some
    /// were left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

/// Echo a text back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Echo {
    pub text: String,
}

/// Admin: end a user's session (`kicked` with reason `admin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kick {
    pub id: UserId,
    /// Shown to the user with the `kicked` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Admin: stop a user from sending for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mute {
    pub id: UserId,
    pub seconds: i64,
}

/// Admin: a text to every online user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broadcast {
    pub text: String,
}

/// Admin: stop the server gracefully.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shutdown {
    /// Seconds to let in-flight work finish (default: the server's setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<i64>,
}

/// A request naming a group and a user: `group_kick` (the creator or a group admin
/// removes a member, who stays out until invited again), `group_invite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupUser {
    pub group: GroupId,
    pub id: UserId,
}

/// The group's creator makes a member an admin of the group, or a member again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRole {
    pub group: GroupId,
    pub id: UserId,
    /// `admin` or `member`.
    pub role: crate::types::Role,
}

/// Every request of protocol version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Register(Register),
    Login(Login),
    Logout,
    LogoutAll,
    ChangePassword(ChangePassword),
    Whoami,
    Users,
    AddFriend(UserRef),
    RemoveFriend(UserRef),
    Friends(Page),
    Send(Send),
    CreateGroup(CreateGroup),
    JoinGroup(GroupRef),
    LeaveGroup(GroupRef),
    DeleteGroup(GroupRef),
    Groups(Page),
    GroupMembers(GroupMembers),
    GroupSend(GroupSend),
    History(History),
    Ack(Ack),
    Ping,
    Echo(Echo),
    Kick(Kick),
    Mute(Mute),
    Unmute(UserRef),
    Broadcast(Broadcast),
    Shutdown(Shutdown),
    GroupKick(GroupUser),
    GroupInvite(GroupUser),
    DeclineInvite(GroupRef),
    Invites,
    GroupRole(GroupRole),
    DeclineFriend(UserRef),
    FriendRequests,
    Block(UserRef),
    Unblock(UserRef),
    Blocked,
    Conversations(Conversations),
    Read(Read),
    Typing(Typing),
    Sync(Sync),
}

impl Request {
    /// The op's name on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Register(_) => "register",
            Request::Login(_) => "login",
            Request::Logout => "logout",
            Request::LogoutAll => "logout_all",
            Request::ChangePassword(_) => "change_password",
            Request::Whoami => "whoami",
            Request::Users => "users",
            Request::AddFriend(_) => "add_friend",
            Request::RemoveFriend(_) => "remove_friend",
            Request::Friends(_) => "friends",
            Request::Send(_) => "send",
            Request::CreateGroup(_) => "create_group",
            Request::JoinGroup(_) => "join_group",
            Request::LeaveGroup(_) => "leave_group",
            Request::DeleteGroup(_) => "delete_group",
            Request::Groups(_) => "groups",
            Request::GroupMembers(_) => "group_members",
            Request::GroupSend(_) => "group_send",
            Request::History(_) => "history",
            Request::Ack(_) => "ack",
            Request::Ping => "ping",
            Request::Echo(_) => "echo",
            Request::Kick(_) => "kick",
            Request::Mute(_) => "mute",
            Request::Unmute(_) => "unmute",
            Request::Broadcast(_) => "broadcast",
            Request::Shutdown(_) => "shutdown",
            Request::GroupKick(_) => "group_kick",
            Request::GroupInvite(_) => "group_invite",
            Request::DeclineInvite(_) => "decline_invite",
            Request::Invites => "invites",
            Request::GroupRole(_) => "group_role",
            Request::DeclineFriend(_) => "decline_friend",
            Request::FriendRequests => "friend_requests",
            Request::Block(_) => "block",
            Request::Unblock(_) => "unblock",
            Request::Blocked => "blocked",
            Request::Conversations(_) => "conversations",
            Request::Read(_) => "read",
            Request::Typing(_) => "typing",
            Request::Sync(_) => "sync",
        }
    }

    /// Whether the op may be used before login.
    pub fn allowed_before_login(&self) -> bool {
        matches!(
            self,
            Request::Register(_) | Request::Login(_) | Request::Ping | Request::Echo(_)
        )
    }

    /// This request as one frame of JSON text with the given rid, without a line ending.
    pub fn to_json(&self, rid: u64) -> String {
        #[derive(Serialize)]
        struct WithRid<'a> {
            rid: u64,
            #[serde(flatten)]
            req: &'a Request,
        }
        serde_json::to_string(&WithRid { rid, req: self }).unwrap_or_default()
    }
}

/// Why a frame is not a valid request. Every case maps to `bad_request`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BadRequest {
    /// The request's rid, when the frame got far enough to have one.
    pub rid: Rid,
    /// What is wrong, for a person.
    pub message: String,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    op: Option<&'a RawValue>,
    #[serde(borrow, default)]
    rid: Option<&'a RawValue>,
}

fn rid_is_valid(raw: &RawValue) -> bool {
    let text = raw.get();
    text == "null"
        || text.starts_with('"')
        || text.starts_with('-')
        || text.starts_with(|c: char| c.is_ascii_digit())
}

/// serde_json's message without its "at line L column C": the part a person needs.
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.find(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Parses one frame (the bytes of one JSON object, without the line ending).
pub fn parse(frame: &[u8]) -> Result<(Rid, Request), BadRequest> {
    let bad = |rid: Rid, message: String| BadRequest { rid, message };
    // The whole line, not only the fields read: serde skips unknown fields unchecked.
    let Ok(text) = std::str::from_utf8(frame) else {
        return Err(bad(Rid::NONE, "not valid UTF-8".into()));
    };
    let frame = text.as_bytes();
    // Serde's derived structs would also read a JSON array, field by field: refuse it here.
    if frame.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        let message = match serde_json::from_slice::<serde::de::IgnoredAny>(frame) {
            Ok(_) => "a request must be a JSON object".to_string(),
            Err(e) => format!("not valid JSON: {e}"),
        };
        return Err(bad(Rid::NONE, message));
    }
    let envelope: Envelope<'_> = match serde_json::from_slice(frame) {
        Ok(envelope) => envelope,
        Err(e) => {
            let message = if e.is_data() {
                // A key given twice (`duplicate field `op``), or a mistyped `rid`.
                format!("bad request: {}", without_position(&e))
            } else {
                format!("not valid JSON: {e}")
            };
            return Err(bad(Rid::NONE, message));
        }
    };
    let rid = match envelope.rid {
        None => Rid::NONE,
        Some(raw) if rid_is_valid(raw) => Rid(Some(raw.to_owned())),
        Some(_) => return Err(bad(Rid::NONE, "rid must be a number or a string".into())),
    };
    let Some(op) = envelope.op else {
        return Err(bad(rid, "missing field `op`".into()));
    };
    let Ok(op) = serde_json::from_str::<Cow<'_, str>>(op.get()) else {
        return Err(bad(rid, "`op` must be a string".into()));
    };
    fn fields<'de, T: Deserialize<'de>>(frame: &'de [u8]) -> Result<T, String> {
        serde_json::from_slice(frame).map_err(|e| without_position(&e))
    }
    let parsed = match op.as_ref() {
        "register" => fields(frame).map(Request::Register),
        "login" => fields(frame).map(Request::Login),
        "logout" => Ok(Request::Logout),
        "logout_all" => Ok(Request::LogoutAll),
        "change_password" => fields(frame).map(Request::ChangePassword),
        "whoami" => Ok(Request::Whoami),
        "users" => Ok(Request::Users),
        "add_friend" => fields(frame).map(Request::AddFriend),
        "remove_friend" => fields(frame).map(Request::RemoveFriend),
        "friends" => fields(frame).map(Request::Friends),
        "send" => fields(frame).map(Request::Send),
        "create_group" => fields(frame).map(Request::CreateGroup),
        "join_group" => fields(frame).map(Request::JoinGroup),
        "leave_group" => fields(frame).map(Request::LeaveGroup),
        "delete_group" => fields(frame).map(Request::DeleteGroup),
        "groups" => fields(frame).map(Request::Groups),
        "group_members" => fields(frame).map(Request::GroupMembers),
        "group_send" => fields(frame).map(Request::GroupSend),
        "history" => fields(frame).map(Request::History),
        "ack" => fields(frame).map(Request::Ack),
        "ping" => Ok(Request::Ping),
        "echo" => fields(frame).map(Request::Echo),
        "kick" => fields(frame).map(Request::Kick),
        "mute" => fields(frame).map(Request::Mute),
        "unmute" => fields(frame).map(Request::Unmute),
        "broadcast" => fields(frame).map(Request::Broadcast),
        "shutdown" => fields(frame).map(Request::Shutdown),
        "group_kick" => fields(frame).map(Request::GroupKick),
        "group_invite" => fields(frame).map(Request::GroupInvite),
        "decline_invite" => fields(frame).map(Request::DeclineInvite),
        "invites" => Ok(Request::Invites),
        "group_role" => fields(frame).map(Request::GroupRole),
        "decline_friend" => fields(frame).map(Request::DeclineFriend),
        "friend_requests" => Ok(Request::FriendRequests),
        "block" => fields(frame).map(Request::Block),
        "unblock" => fields(frame).map(Request::Unblock),
        "blocked" => Ok(Request::Blocked),
        "conversations" => fields(frame).map(Request::Conversations),
        "read" => fields(frame).map(Request::Read),
        "typing" => fields(frame).map(Request::Typing),
        "sync" => fields(frame).map(Request::Sync),
        other => {
            let shown: String = other.chars().take(40).collect();
            return Err(bad(rid, format!("unknown op `{shown}`")));
        }
    };
    match parsed {
        Ok(request) => Ok((rid, request)),
        Err(message) => Err(bad(rid, format!("{op}: {message}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_send_with_its_rid() {
        let (rid, req) = parse(br#"{"op":"send","rid":7,"to":2,"text":"hi"}"#).unwrap();
        assert_eq!(rid.as_json(), "7");
        assert_eq!(
            req,
            Request::Send(Send {
                to: 2,
                text: "hi".into(),
                cmid: None,
            })
        );
    }

    #[test]
    fn keeps_the_rid_of_a_request_with_bad_fields() {
        let err = parse(br#"{"op":"send","rid":"a","to":"x","text":"hi"}"#).unwrap_err();
        assert_eq!(err.rid.as_json(), r#""a""#);
        assert!(
            err.message.starts_with("send: invalid type"),
            "{}",
            err.message
        );
    }

    #[test]
    fn refuses_what_is_not_an_object_or_not_json() {
        assert_eq!(parse(b"[1,2]").unwrap_err().rid.as_json(), "null");
        assert!(parse(br#"["ping", 5]"#).is_err());
        assert!(parse(b" 42").unwrap_err().message.contains("JSON object"));
        assert!(parse(b"{nope")
            .unwrap_err()
            .message
            .contains("not valid JSON"));
        assert!(parse(b"\xff\xfe").is_err());
        assert!(parse(br#"{"op":"dance","rid":1}"#)
            .unwrap_err()
            .message
            .contains("unknown op"));
        assert!(parse(br#"{"op":"ping","rid":{}}"#).is_err());
    }

    #[test]
    fn says_what_is_wrong_with_an_object() {
        let err = parse(br#"{"op":"ping","op":"echo","rid":1}"#).unwrap_err();
        assert!(
            err.message.contains("duplicate field `op`"),
            "{}",
            err.message
        );
        let err = parse(br#"{"op":3,"rid":1}"#).unwrap_err();
        assert_eq!(err.message, "`op` must be a string");
        assert_eq!(err.rid.as_json(), "1");
        // Invalid UTF-8 anywhere in the line, even in a field no op reads.
        let err = parse(b"{\"op\":\"ping\",\"x\":\"\xff\"}").unwrap_err();
        assert_eq!(err.message, "not valid UTF-8");
        let (_, req) = parse(br#"{"op":"p\u0069ng"}"#).unwrap();
        assert_eq!(req, Request::Ping);
    }

    #[test]
    fn serializes_with_op_and_rid() {
        let json = Request::Ack(Ack {
            id: Some(5),
            ..Ack::default()
        })
        .to_json(3);
        assert_eq!(json, r#"{"rid":3,"op":"ack","id":5}"#);
        assert_eq!(Request::Ping.to_json(1), r#"{"rid":1,"op":"ping"}"#);
        let (_, back) = parse(Request::Logout.to_json(9).as_bytes()).unwrap();
        assert_eq!(back, Request::Logout);
    }
}
