//! Administration: `kick`, `mute`, `unmute`, `broadcast`, `shutdown` (admins only), and
//! `group_kick` (a group's creator or admins; the removed member stays out until
//! invited again). A user is an admin only because the operator made
//! it one (`chatd admin grant NAME`, or `--admins`); no op lets a user raise itself.
//! Every admin action is logged with who did it.

use std::time::Duration;

use chat_proto::reply::{ok_frame, Empty, MuteReply};
use chat_proto::request::{Broadcast, GroupUser, Kick, Mute, Rid, Shutdown, UserRef};
use chat_proto::Event;
use tokio::io::AsyncWrite;

use super::auth::now_ms;
use super::check_text;
use crate::dialect::Dialect;
use crate::error::{OpError, OpResult};
use crate::hub::Frame;
use crate::session::Session;

/// The longest mute, in seconds (a year).
const MAX_MUTE_SECS: i64 = 365 * 24 * 3600;

/// Refuses anyone who is not an admin.
pub(crate) async fn admin<W: AsyncWrite + Unpin, D: Dialect>(
    s: &Session<W, D>,
) -> Result<(), OpError> {
    let me = s.user()?;
    if s.ctx.admins.contains(&me.id) || s.ctx.store.is_admin(me.id).await? {
        Ok(())
    } else {
        Err(OpError::forbidden("only an admin may do that"))
    }
}

pub(crate) async fn kick<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: Kick,
) -> OpResult {
    admin(s).await?;
    if let Some(reason) = &req.reason {
        check_text("reason", reason, 0, s.ctx.config.max_text)?;
    }
    if s.ctx.store.user(req.id).await?.is_none() {
        return Err(OpError::new(
            chat_proto::ErrorCode::NotFound,
            "no such user",
        ));
    }
    tracing::info!(admin = s.user()?.id, target = req.id, "admin: kick");
    s.ctx.bus.kick(req.id, req.reason);
    Ok(ok_frame(rid, &Empty {}))
}

pub(crate) async fn mute<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: Mute,
) -> OpResult {
    admin(s).await?;
    if !(1..=MAX_MUTE_SECS).contains(&req.seconds) {
        return Err(OpError::bad_request(format!(
            "mute: seconds must be 1 to {MAX_MUTE_SECS}"
        )));
    }
    let until = now_ms() + req.seconds * 1000;
    s.ctx.store.set_muted_until(req.id, until).await?;
    s.ctx.mutes.set(req.id, until);
    s.ctx.bus.muted(req.id, until);
    tracing::info!(
        admin = s.user()?.id,
        target = req.id,
        seconds = req.seconds,
        "admin: mute"
    );
    Ok(ok_frame(rid, &MuteReply { until }))
}

pub(crate) async fn unmute<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: UserRef,
) -> OpResult {
    admin(s).await?;
    s.ctx.store.set_muted_until(req.id, 0).await?;
    s.ctx.mutes.set(req.id, 0);
    s.ctx.bus.muted(req.id, 0);
    tracing::info!(admin = s.user()?.id, target = req.id, "admin: unmute");
    Ok(ok_frame(rid, &Empty {}))
}

pub(crate) async fn broadcast<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: Broadcast,
) -> OpResult {
    admin(s).await?;
    check_text("text", &req.text, 1, s.ctx.config.max_text)?;
    let me = s.user()?.clone();
    tracing::info!(admin = me.id, "admin: broadcast");
    let event = Event::Broadcast {
        from: me.id,
        from_name: me.name,
        text: req.text,
        ts: now_ms(),
    };
    s.ctx.bus.broadcast(Frame::event(&event));
    Ok(ok_frame(rid, &Empty {}))
}

pub(crate) async fn shutdown<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: Shutdown,
) -> OpResult {
    admin(s).await?;
    let grace = match req.grace {
        None => None,
        Some(secs) if (0..=3600).contains(&secs) => Some(Duration::from_secs(secs as u64)),
        Some(_) => return Err(OpError::bad_request("shutdown: grace must be 0 to 3600")),
    };
    tracing::warn!(admin = s.user()?.id, ?grace, "admin: shutdown");
    s.ctx.stop.request(grace);
    Ok(ok_frame(rid, &Empty {}))
}

pub(crate) async fn group_kick<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: GroupUser,
) -> OpResult {
    let me = s.user()?.id;
    if req.id == me {
        return Err(OpError::bad_request(
            "group_kick: use leave_group or delete_group",
        ));
    }
    s.ctx.store.group_kick(req.group, me, req.id).await?;
    tracing::info!(
        creator = me,
        group = req.group,
        target = req.id,
        "group_kick"
    );
    let event = Event::RemovedFromGroup { group: req.group };
    s.ctx.bus.publish(&[req.id], Frame::event(&event));
    let event = Event::MemberLeft {
        group: req.group,
        user: req.id,
        removed: true,
    };
    super::groups::tell_members(&s.ctx, req.group, req.id, &event).await;
    Ok(ok_frame(rid, &Empty {}))
}
