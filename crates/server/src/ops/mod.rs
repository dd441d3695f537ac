//! The ops of protocol version 1, each in a small function that checks its fields,
//! acts through the store, the hub and the bus, and returns its reply frame.
//!
//! - [`admin`]: kick, mute, unmute, broadcast, shutdown (admins), group_kick (creators)
//! - [`auth`]: register, login, logout, whoami
//! - [`friends`]: add_friend, remove_friend, friends, and presence announcements
//! - [`groups`]: create_group, join_group, leave_group, delete_group, groups, group_members
//! - [`messages`]: send, group_send, history, ack
//! - [`conversations`]: conversations, read, typing, sync
//! - [`misc`]: users, ping, echo

pub(crate) mod account;
pub(crate) mod admin;
pub(crate) mod auth;
pub(crate) mod conversations;
pub(crate) mod friends;
pub(crate) mod groups;
pub(crate) mod messages;
pub(crate) mod misc;

use chat_proto::request::{Request, Rid};
use tokio::io::AsyncWrite;

use crate::dialect::Dialect;
use crate::error::{OpError, OpResult};
use crate::session::Session;

/// Runs one request. The session has checked that it may run before login.
pub(crate) async fn dispatch<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: Request,
) -> OpResult {
    match req {
        Request::Register(r) => auth::register(s, rid, r).await,
        Request::Login(r) => auth::login(s, rid, r).await,
        Request::Logout => auth::logout(s, rid).await,
        Request::LogoutAll => account::logout_all(s, rid).await,
        Request::ChangePassword(r) => account::change_password(s, rid, r).await,
        Request::Whoami => auth::whoami(s, rid),
        Request::Users => misc::users(s, rid).await,
        Request::AddFriend(r) => friends::add_friend(s, rid, r).await,
        Request::RemoveFriend(r) => friends::remove_friend(s, rid, r).await,
        Request::Friends(r) => friends::friends(s, rid, r).await,
        Request::Send(r) => messages::send(s, rid, r).await,
        Request::CreateGroup(r) => groups::create_group(s, rid, r).await,
        Request::JoinGroup(r) => groups::join_group(s, rid, r).await,
        Request::LeaveGroup(r) => groups::leave_group(s, rid, r).await,
        Request::DeleteGroup(r) => groups::delete_group(s, rid, r).await,
        Request::Groups(r) => groups::groups(s, rid, r).await,
        Request::GroupMembers(r) => groups::group_members(s, rid, r).await,
        Request::GroupSend(r) => messages::group_send(s, rid, r).await,
        Request::History(r) => messages::history(s, rid, r).await,
        Request::Ack(r) => messages::ack(s, rid, r).await,
        Request::Ping => misc::ping(rid),
        Request::Echo(r) => misc::echo(rid, r),
        Request::Kick(r) => admin::kick(s, rid, r).await,
        Request::Mute(r) => admin::mute(s, rid, r).await,
        Request::Unmute(r) => admin::unmute(s, rid, r).await,
        Request::Broadcast(r) => admin::broadcast(s, rid, r).await,
        Request::Shutdown(r) => admin::shutdown(s, rid, r).await,
        Request::GroupKick(r) => admin::group_kick(s, rid, r).await,
        Request::GroupInvite(r) => groups::group_invite(s, rid, r).await,
        Request::DeclineInvite(r) => groups::decline_invite(s, rid, r).await,
        Request::Invites => groups::invites(s, rid).await,
        Request::GroupRole(r) => groups::group_role(s, rid, r).await,
        Request::DeclineFriend(r) => friends::decline_friend(s, rid, r).await,
        Request::FriendRequests => friends::friend_requests(s, rid).await,
        Request::Block(r) => friends::block(s, rid, r).await,
        Request::Unblock(r) => friends::unblock(s, rid, r).await,
        Request::Blocked => friends::blocked(s, rid).await,
        Request::Conversations(r) => conversations::conversations(s, rid, r).await,
        Request::Read(r) => conversations::read(s, rid, r).await,
        Request::Typing(r) => conversations::typing(s, rid, r).await,
        Request::Sync(r) => conversations::sync(s, rid, r).await,
    }
}

/// Checks a name (of a user or a group): see [`crate::names`].
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), OpError> {
    match crate::names::name_problem(name) {
        Some(problem) => Err(OpError::bad_request(format!("{what} {problem}"))),
        None => Ok(()),
    }
}

/// Checks a text that people read (a message, a description, a broadcast): its length in
/// characters, and no control characters but newline and tab. An ESC or a carriage
/// return in a message could rewrite a terminal client's screen or fake a line from the
/// system; NUL ends a classic frame.
pub(crate) fn check_text(what: &str, text: &str, min: usize, max: usize) -> Result<(), OpError> {
    check_len(what, text, min, max)?;
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() && *c != '\n' && *c != '\t')
    {
        return Err(OpError::bad_request(format!(
            "{what} must not contain control characters (found U+{:04X}); newline and tab are allowed",
            u32::from(c)
        )));
    }
    Ok(())
}

/// Checks a text field's length in characters.
pub(crate) fn check_len(what: &str, text: &str, min: usize, max: usize) -> Result<(), OpError> {
    let chars = text.chars().count();
    if chars < min || chars > max {
        return Err(OpError::bad_request(format!(
            "{what} must be {min} to {max} characters"
        )));
    }
    Ok(())
}
