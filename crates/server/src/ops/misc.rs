//! `users`, `ping`, `echo`.

use chat_proto::reply::{ok_frame, EchoReply, Empty, UsersReply};
use std::collections::HashSet;

use chat_proto::request::{Echo, Rid};
use chat_proto::UserId;
use tokio::io::AsyncWrite;

use crate::dialect::Dialect;
use crate::error::OpResult;
use crate::session::Session;

/// The users online now that the caller may see: its friends (and itself), or everyone
/// with `--list-users all` or for an admin.
pub(crate) async fn users<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
) -> OpResult {
    let me = s.user()?.id;
    let mut users = s.ctx.hub.online_users();
    if !s.ctx.config.list_all_users && super::admin::admin(s).await.is_err() {
        let friends: HashSet<UserId> = s.ctx.store.friend_ids(me).await?.into_iter().collect();
        users.retain(|u| u.id == me || friends.contains(&u.id));
    }
    Ok(ok_frame(rid, &UsersReply { users }))
}

pub(crate) fn ping(rid: &Rid) -> OpResult {
    Ok(ok_frame(rid, &Empty {}))
}

pub(crate) fn echo(rid: &Rid, req: Echo) -> OpResult {
    Ok(ok_frame(rid, &EchoReply { text: req.text }))
}
