//! Events: frames the server pushes without a request, `{"event": "<name>", ...}`.
//! An event never carries `ok` or `rid`.

use serde::{Deserialize, Serialize};

use crate::types::{Friend, Invite, Msg, User};
use crate::{ConvId, GroupId, Seq, UserId};

/// Reasons carried by the `kicked` event.
pub mod kick_reason {
    /// The same user logged in on another connection.
    pub const LOGGED_IN_ELSEWHERE: &str = "logged_in_elsewhere";
    /// No login within the login timeout.
    pub const LOGIN_TIMEOUT: &str = "login_timeout";
    /// Nothing received within the idle timeout.
    pub const IDLE_TIMEOUT: &str = "idle_timeout";
    /// The server is shutting down.
    pub const SHUTDOWN: &str = "shutdown";
    /// The frame was over the size limit.
    pub const TOO_LARGE: &str = "too_large";
    /// The session fell too far behind in reading what was sent to it.
    pub const SLOW_CONSUMER: &str = "slow_consumer";
    /// The server holds as many connections as it may (`--max-connections`).
    pub const SERVER_FULL: &str = "server_full";
    /// The client's address holds as many connections as it may
    /// (`--max-connections-per-address`).
    pub const TOO_MANY_CONNECTIONS: &str = "too_many_connections";
    /// The connection kept sending far past its request rate.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// An admin ended the session.
    pub const ADMIN: &str = "admin";
}

/// A server-pushed event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A one-to-one or group message.
    Msg(Msg),
    /// A friend came online or went offline.
    Presence { user: UserId, online: bool },
    /// Someone made the session's user a friend.
    FriendAdded { friend: Friend },
    /// Someone removed the session's user from their friends.
    FriendRemoved { user: UserId },
    /// A group the user was in was deleted by its creator.
    GroupDeleted { group: GroupId },
    /// The server ends this session; the connection closes right after.
    Kicked {
        reason: String,
        /// Said by the admin who kicked, when one did and said something.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A text from an admin to everyone online.
    Broadcast {
        from: UserId,
        from_name: String,
        text: String,
        /// Milliseconds since the Unix epoch.
        ts: i64,
    },
    /// The group's creator or an admin removed the user from a group.
    RemovedFromGroup { group: GroupId },
    /// Someone asks the user to be friends (answer with `add_friend` or
    /// `decline_friend`).
    FriendRequest { from: User },
    /// The user is invited into a group (answer with `join_group` or `decline_invite`).
    GroupInvite(Invite),
    /// Someone joined a group the user is in.
    MemberJoined { group: GroupId, user: User },
    /// Someone left a group the user is in, or was removed (`removed`).
    MemberLeft {
        group: GroupId,
        user: UserId,
        removed: bool,
    },
    /// Every pending message has been sent after a login.
    Synced,
    /// `user` has read conversation `conv` up to `seq` (a read receipt).
    Read {
        conv: ConvId,
        user: UserId,
        seq: Seq,
    },
    /// `user` is typing in `conv` (ephemeral: not stored, not replayed).
    Typing {
        conv: ConvId,
        user: UserId,
        name: String,
        /// The group, for a group conversation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<GroupId>,
    },
}

/// A `msg` event written straight from a borrowed [`Msg`]: the same JSON as
/// `Event::Msg(msg.clone()).to_json()`, without copying the message to write it.
pub fn msg_json(msg: &Msg) -> Vec<u8> {
    #[derive(Serialize)]
    struct MsgEvent<'a> {
        event: &'static str,
        #[serde(flatten)]
        msg: &'a Msg,
    }
    serde_json::to_vec(&MsgEvent { event: "msg", msg }).unwrap_or_default()
}

impl Event {
    /// This event as one frame of JSON text, without a line ending.
    pub fn to_json(&self) -> String {
        // Serializing these plain types cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_json_is_the_msg_event() {
        let msg = Msg {
            id: 7,
            ts: 1,
            from: 2,
            from_name: "bob".into(),
            text: "hi \"there\"".into(),
            to: Some(3),
            group: None,
            conv: 9,
            seq: 4,
        };
        let borrowed: serde_json::Value = serde_json::from_slice(&msg_json(&msg)).unwrap();
        let owned: serde_json::Value = serde_json::from_str(&Event::Msg(msg).to_json()).unwrap();
        assert_eq!(borrowed, owned);
    }
}
