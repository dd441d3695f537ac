//! `users`, `ping`, `echo`.

use chat_proto::reply::{ok_frame, EchoReply, Empty, UsersReply};
use chat_proto::request::{Echo, Rid};
use tokio::io::AsyncWrite;

use crate::dialect::Dialect;
use crate::error::OpResult;
use crate::session::Session;

/// The users online now.
pub(crate) fn users<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
) -> OpResult {
    s.user()?;
    let users = s.ctx.hub.online_users();
    Ok(ok_frame(rid, &UsersReply { users }))
}

pub(crate) fn ping(rid: &Rid) -> OpResult {
    Ok(ok_frame(rid, &Empty {}))
}

pub(crate) fn echo(rid: &Rid, req: Echo) -> OpResult {
    Ok(ok_frame(rid, &EchoReply { text: req.text }))
}
