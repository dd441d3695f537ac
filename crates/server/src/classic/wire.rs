//! The classic protocol's messages: `msgid` numbers, requests read into protocol version 1
//! [`Request`]s, and the objects the server writes.
//!
//! The objects' fields are declared in alphabetical order, the order the classic server
//! (nlohmann::json) writes them in; clients do not depend on it, but it costs nothing.

use chat_proto::request::{self, Request};
use chat_proto::types::{Friend, GroupInfo, Member, Msg, Role};
use serde::Serialize;
use serde_json::{Map, Value};

/// The `msgid` of each classic message.
pub(crate) mod msgid {
    pub(crate) const LOGIN: i64 = 1;
    pub(crate) const LOGIN_ACK: i64 = 2;
    pub(crate) const LOGINOUT: i64 = 3;
    pub(crate) const REG: i64 = 4;
    pub(crate) const REG_ACK: i64 = 5;
    pub(crate) const ONE_CHAT: i64 = 6;
    pub(crate) const ADD_FRIEND: i64 = 7;
    pub(crate) const CREATE_GROUP: i64 = 8;
    pub(crate) const ADD_GROUP: i64 = 9;
    pub(crate) const GROUP_CHAT: i64 = 10;
}

/// Why a classic frame is not a request to run.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// Not a JSON object, or no integer `msgid`.
    Malformed,
    /// A `msgid` that is not a request (an ack, or unknown).
    UnknownMsgid(i64),
    /// A request other than LOGIN and REG before login.
    NotLoggedIn(i64),
    /// A request without a field it needs (named), or with it of the wrong type.
    BadField(i64, &'static str),
}

/// Reads one classic request as the protocol version 1 request it stands for.
///
/// The acting user is always the session's: the `id` (and `name`, `time`) that classic
/// clients put in their requests is never read. LOGIN and REG with missing or mistyped
/// fields still become requests, so that they fail in the op and get their `errno` 1.
pub(crate) fn parse(frame: &[u8], logged_in: bool) -> Result<Request, Dropped> {
    let Ok(body) = serde_json::from_slice::<Map<String, Value>>(frame) else {
        return Err(Dropped::Malformed);
    };
    let Some(id) = body.get("msgid").and_then(Value::as_i64) else {
        return Err(Dropped::Malformed);
    };
    let int = |field: &'static str| {
        body.get(field)
            .and_then(Value::as_i64)
            .ok_or(Dropped::BadField(id, field))
    };
    let text = |field: &'static str| {
        body.get(field)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or(Dropped::BadField(id, field))
    };
    match id {
        msgid::LOGIN => {
            return Ok(Request::Login(request::Login {
                id: int("id").ok(),
                password: text("password").ok(),
                ..Default::default()
            }))
        }
        msgid::REG => {
            return Ok(Request::Register(request::Register {
                name: text("name").unwrap_or_default(),
                password: text("password").unwrap_or_default(),
            }))
        }
        msgid::LOGINOUT
        | msgid::ONE_CHAT
        | msgid::ADD_FRIEND
        | msgid::CREATE_GROUP
        | msgid::ADD_GROUP
        | msgid::GROUP_CHAT => {}
        other => return Err(Dropped::UnknownMsgid(other)),
    }
    if !logged_in {
        return Err(Dropped::NotLoggedIn(id));
    }
    Ok(match id {
        msgid::LOGINOUT => Request::Logout,
        msgid::ONE_CHAT => Request::Send(request::Send {
            to: int("toid")?,
            text: text("msg")?,
            cmid: None,
        }),
        msgid::ADD_FRIEND => Request::AddFriend(request::UserRef {
            id: int("friendid")?,
        }),
        msgid::CREATE_GROUP => Request::CreateGroup(request::CreateGroup {
            name: text("groupname")?,
            desc: text("groupdesc").unwrap_or_default(),
            // The classic protocol joins by id and has no invitations.
            open: true,
            shared_history: false,
        }),
        msgid::ADD_GROUP => Request::JoinGroup(request::GroupRef {
            group: int("groupid")?,
        }),
        _ => Request::GroupSend(request::GroupSend {
            group: int("groupid")?,
            text: text("msg")?,
            cmid: None,
        }),
    })
}

/// Writes one classic object and its NUL terminator.
pub(crate) fn put<T: Serialize>(out: &mut Vec<u8>, object: &T) {
    // Serializing these plain structs into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, object).is_ok() {
        out.push(0);
    }
}

/// The JSON text of an object, for the arrays of strings in LOGIN_ACK.
fn text_of<T: Serialize>(object: &T) -> String {
    serde_json::to_string(object).unwrap_or_default()
}

/// REG_ACK.
#[derive(Serialize)]
pub(crate) struct RegAck {
    pub(crate) errno: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<i64>,
    pub(crate) msgid: i64,
}

/// LOGIN_ACK for a failed login.
#[derive(Serialize)]
pub(crate) struct LoginFailed<'a> {
    pub(crate) errmsg: &'a str,
    pub(crate) errno: i64,
    pub(crate) msgid: i64,
}

/// LOGIN_ACK for a successful login; the arrays hold JSON text, one object per string.
#[derive(Serialize)]
pub(crate) struct LoginOk<'a> {
    pub(crate) errno: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) friends: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) groups: Vec<String>,
    pub(crate) id: i64,
    pub(crate) msgid: i64,
    pub(crate) name: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) offlinemsg: Vec<String>,
}

fn state(online: bool) -> &'static str {
    if online {
        "online"
    } else {
        "offline"
    }
}

/// A friend in LOGIN_ACK, as JSON text.
pub(crate) fn friend_text(friend: &Friend) -> String {
    #[derive(Serialize)]
    struct Entry<'a> {
        id: i64,
        name: &'a str,
        state: &'static str,
    }
    text_of(&Entry {
        id: friend.id,
        name: &friend.name,
        state: state(friend.online),
    })
}

/// A group in LOGIN_ACK, with its members, as JSON text.
pub(crate) fn group_text(group: &GroupInfo) -> String {
    #[derive(Serialize)]
    struct Entry<'a> {
        groupdesc: &'a str,
        groupname: &'a str,
        id: i64,
        users: Vec<String>,
    }
    text_of(&Entry {
        groupdesc: &group.desc,
        groupname: &group.name,
        id: group.id,
        users: group.members.iter().map(member_text).collect(),
    })
}

fn member_text(member: &Member) -> String {
    #[derive(Serialize)]
    struct Entry<'a> {
        id: i64,
        name: &'a str,
        role: &'static str,
        state: &'static str,
    }
    text_of(&Entry {
        id: member.id,
        name: &member.name,
        role: match member.role {
            Role::Creator => "creator",
            Role::Admin | Role::Member => "normal",
        },
        state: state(member.online),
    })
}

/// A message as the classic ONE_CHAT or GROUP_CHAT object, as JSON text (without the
/// NUL): the real sender's id and name, and the server's time of the message.
pub(crate) fn chat_text(msg: &Msg) -> String {
    #[derive(Serialize)]
    struct OneChat<'a> {
        id: i64,
        msg: &'a str,
        msgid: i64,
        name: &'a str,
        time: String,
        toid: i64,
    }
    #[derive(Serialize)]
    struct GroupChat<'a> {
        groupid: i64,
        id: i64,
        msg: &'a str,
        msgid: i64,
        name: &'a str,
        time: String,
    }
    let time = local_time(msg.ts);
    match msg.group {
        Some(group) => text_of(&GroupChat {
            groupid: group,
            id: msg.from,
            msg: &msg.text,
            msgid: msgid::GROUP_CHAT,
            name: &msg.from_name,
            time,
        }),
        None => text_of(&OneChat {
            id: msg.from,
            msg: &msg.text,
            msgid: msgid::ONE_CHAT,
            name: &msg.from_name,
            time,
            toid: msg.to.unwrap_or_default(),
        }),
    }
}

/// Milliseconds since the epoch as the server's local time, "YYYY-MM-DD HH:MM:SS".
fn local_time(ts_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ts_ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_requests_and_ignores_the_acting_id() {
        let req = parse(
            br#"{"msgid":6,"id":99,"name":"mallory","toid":2,"msg":"hi","time":"x"}"#,
            true,
        );
        assert_eq!(
            req,
            Ok(Request::Send(request::Send {
                to: 2,
                text: "hi".into(),
                cmid: None,
            }))
        );
        assert_eq!(parse(br#"{"msgid":3,"id":5}"#, true), Ok(Request::Logout));
        assert_eq!(
            parse(br#"{"msgid":1,"id":5,"password":"pw"}"#, false),
            Ok(Request::Login(request::Login {
                id: Some(5),
                password: Some("pw".into()),
                ..Default::default()
            }))
        );
        assert_eq!(
            parse(br#"{"msgid":8,"id":1,"groupname":"g"}"#, true),
            Ok(Request::CreateGroup(request::CreateGroup {
                name: "g".into(),
                desc: String::new(),
                open: true,
                shared_history: false,
            }))
        );
    }

    #[test]
    fn drops_what_it_cannot_run() {
        assert_eq!(parse(b"{\"msgid\":6", true), Err(Dropped::Malformed));
        assert_eq!(parse(b"[6]", true), Err(Dropped::Malformed));
        assert_eq!(parse(br#"{"msgid":"6"}"#, true), Err(Dropped::Malformed));
        assert_eq!(
            parse(br#"{"msgid":2}"#, true),
            Err(Dropped::UnknownMsgid(2))
        );
        assert_eq!(
            parse(br#"{"msgid":6,"toid":2,"msg":"hi"}"#, false),
            Err(Dropped::NotLoggedIn(6))
        );
        assert_eq!(
            parse(br#"{"msgid":6,"toid":"2","msg":"hi"}"#, true),
            Err(Dropped::BadField(6, "toid"))
        );
    }

    #[test]
    fn writes_chat_objects_with_the_senders_real_identity() {
        let msg = Msg {
            id: 7,
            ts: 1_700_000_000_000,
            from: 1,
            from_name: "alice".into(),
            text: "hi".into(),
            to: Some(2),
            group: None,
            conv: (1 << 32) | 2,
            seq: 1,
        };
        let v: Value = serde_json::from_str(&chat_text(&msg)).unwrap();
        assert_eq!(v["msgid"], 6);
        assert_eq!(v["id"], 1);
        assert_eq!(v["name"], "alice");
        assert_eq!(v["toid"], 2);
        let time = v["time"].as_str().unwrap();
        assert_eq!(time.len(), "2023-11-14 22:13:20".len(), "{time}");
        let mut out = Vec::new();
        put(
            &mut out,
            &RegAck {
                errno: 0,
                id: Some(3),
                msgid: msgid::REG_ACK,
            },
        );
        assert_eq!(out, b"{\"errno\":0,\"id\":3,\"msgid\":5}\0");
    }
}
