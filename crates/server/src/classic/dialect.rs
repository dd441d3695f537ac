//! [`ClassicDialect`]: the classic protocol as a [`Dialect`] of the one session loop.
//!
//! Requests become protocol version 1 requests ([`wire::parse`]); replies to LOGIN and REG
//! become LOGIN_ACK and REG_ACK; every other classic request has no reply, so its
//! version 1 reply is only logged when it failed. `msg` events become ONE_CHAT and
//! GROUP_CHAT objects; other events have no classic form and are dropped.
//!
//! LOGIN_ACK carries the offline messages, which the session sends after the version 1
//! login reply as `msg` events up to `synced`. So the dialect holds the login reply,
//! collects those messages, and writes the whole LOGIN_ACK at `synced` (or earlier, once
//! [`MAX_ACK_OFFLINE`] bytes of messages are collected: the rest then follow it as chat
//! objects, so a long backlog costs no more memory than that).

use chat_proto::incoming::ReplyFrame;
use chat_proto::reply::{LoginReply, UserReply};
use chat_proto::request::Rid;
use chat_proto::{ErrorCode, Event};

use super::wire::{self, msgid, Dropped};
use crate::dialect::{Dialect, Inbound};
use crate::hub::Frame;

/// At most this many bytes of offline messages go into LOGIN_ACK.
pub(crate) const MAX_ACK_OFFLINE: usize = 64 * 1024;

/// The classic error text of a failed login.
const LOGIN_INVALID: &str = "id or password is invalid!";

/// A successful login whose LOGIN_ACK waits for the offline messages.
struct HeldLogin {
    reply: LoginReply,
    offline: Vec<String>,
    offline_bytes: usize,
}

/// The classic muduo chat server's JSON `msgid` protocol.
#[derive(Default)]
pub(crate) struct ClassicDialect {
    held: Option<Box<HeldLogin>>,
}

impl ClassicDialect {
    pub(crate) fn new() -> ClassicDialect {
        ClassicDialect::default()
    }

    /// Writes the held LOGIN_ACK, if any.
    fn release_login(&mut self, out: &mut Vec<u8>) {
        let Some(held) = self.held.take() else {
            return;
        };
        let HeldLogin { reply, offline, .. } = *held;
        wire::put(
            out,
            &wire::LoginOk {
                errno: 0,
                friends: reply.friends.iter().map(wire::friend_text).collect(),
                groups: reply.groups.iter().map(wire::group_text).collect(),
                id: reply.user.id,
                msgid: msgid::LOGIN_ACK,
                name: &reply.user.name,
                offlinemsg: offline,
            },
        );
    }

    fn login_reply(&mut self, reply: &ReplyFrame, out: &mut Vec<u8>) {
        let failed = |out: &mut Vec<u8>, errmsg: &str| {
            wire::put(
                out,
                &wire::LoginFailed {
                    errmsg,
                    errno: 1,
                    msgid: msgid::LOGIN_ACK,
                },
            )
        };
        if let Some(error) = &reply.error {
            tracing::info!(code = %error.code, "classic: login failed");
            let errmsg = match error.code {
                ErrorCode::AuthFailed | ErrorCode::BadRequest => LOGIN_INVALID,
                _ => &error.message,
            };
            return failed(out, errmsg);
        }
        match reply.body::<LoginReply>() {
            Ok(reply) => {
                self.held = Some(Box::new(HeldLogin {
                    reply,
                    offline: Vec::new(),
                    offline_bytes: 0,
                }))
            }
            Err(e) => {
                tracing::error!(error = %e, "classic: cannot read a login reply");
                failed(out, "internal error");
            }
        }
    }

    fn register_reply(reply: &ReplyFrame, out: &mut Vec<u8>) {
        let id = match &reply.error {
            Some(error) => {
                tracing::info!(code = %error.code, message = %error.message, "classic: register failed");
                None
            }
            None => match reply.body::<UserReply>() {
                Ok(body) => Some(body.user.id),
                Err(e) => {
                    tracing::error!(error = %e, "classic: cannot read a register reply");
                    None
                }
            },
        };
        let errno = if id.is_some() { 0 } else { 1 };
        wire::put(
            out,
            &wire::RegAck {
                errno,
                id,
                msgid: msgid::REG_ACK,
            },
        );
    }
}

/// The most friends a classic LOGIN_ACK lists.
const CLASSIC_LOGIN_FRIENDS: usize = 1000;
/// The most members a classic LOGIN_ACK lists per group.
const CLASSIC_INLINE_MEMBERS: usize = 200;

impl Dialect for ClassicDialect {
    /// The classic protocol cannot page: its LOGIN_ACK is all a client learns of its
    /// friends and groups. Bounded still, higher than version 1's.
    fn login_lists(&self) -> (usize, usize) {
        (CLASSIC_LOGIN_FRIENDS, CLASSIC_INLINE_MEMBERS)
    }

    fn decode(&mut self, frame: &[u8], logged_in: bool) -> Inbound {
        match wire::parse(frame, logged_in) {
            Ok(request) => Inbound::Request(Rid::NONE, request),
            Err(dropped) => {
                // Never the frame itself: a LOGIN or REG carries a password.
                match dropped {
                    Dropped::Malformed => {
                        tracing::info!(bytes = frame.len(), "classic: dropped a malformed request")
                    }
                    Dropped::UnknownMsgid(id) => {
                        tracing::info!(msgid = id, "classic: dropped a request of unknown msgid")
                    }
                    Dropped::NotLoggedIn(id) => {
                        tracing::info!(msgid = id, "classic: dropped a request before login")
                    }
                    Dropped::BadField(id, field) => tracing::info!(
                        msgid = id,
                        field,
                        "classic: dropped a request with a missing or mistyped field"
                    ),
                }
                Inbound::Ignore
            }
        }
    }

    fn reply(&mut self, op: &'static str, native: &[u8], out: &mut Vec<u8>) {
        let reply = match serde_json::from_slice::<ReplyFrame>(native) {
            Ok(reply) => reply,
            Err(e) => {
                tracing::error!(error = %e, op, "classic: cannot read a reply");
                return;
            }
        };
        match op {
            "login" => self.login_reply(&reply, out),
            "register" => Self::register_reply(&reply, out),
            // Every other classic request has no reply: a failure is only logged.
            _ => {
                if let Some(error) = &reply.error {
                    tracing::info!(
                        op,
                        code = %error.code,
                        message = %error.message,
                        "classic: request failed"
                    );
                }
            }
        }
    }

    fn event(&mut self, frame: &Frame, out: &mut Vec<u8>) {
        let event = match serde_json::from_slice::<Event>(&frame.bytes) {
            Ok(event) => event,
            Err(e) => {
                tracing::error!(error = %e, "classic: cannot read an event");
                return;
            }
        };
        match event {
            Event::Msg(msg) => {
                let text = wire::chat_text(&msg);
                if let Some(held) = self.held.as_mut() {
                    if held.offline.is_empty() || held.offline_bytes + text.len() <= MAX_ACK_OFFLINE
                    {
                        held.offline_bytes += text.len();
                        held.offline.push(text);
                        return;
                    }
                    // A long backlog: the ack goes now, the rest follows it.
                    self.release_login(out);
                }
                out.extend_from_slice(text.as_bytes());
                out.push(0);
            }
            Event::Synced => self.release_login(out),
            Event::Kicked { reason, .. } => {
                // The classic protocol has no such message: the connection just closes.
                tracing::debug!(reason, "classic: session ends");
            }
            // Presence, friend and group events have no classic form.
            _ => {}
        }
    }

    fn acks_on_write(&self) -> bool {
        true
    }

    fn frame_end(&self) -> Option<u8> {
        Some(0)
    }
}
