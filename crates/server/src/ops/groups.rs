//! `create_group`, `join_group`, `leave_group`, `delete_group`, `groups`, `group_members`.

use chat_proto::reply::{ok_frame, Empty, GroupReply, GroupsReply, MembersReply};
use chat_proto::request::{CreateGroup, GroupRef, Rid};
use chat_proto::types::{GroupBrief, GroupInfo, Role};
use chat_proto::Event;
use tokio::io::AsyncWrite;

use super::auth::member;
use super::{check_len, check_name};
use crate::dialect::Dialect;
use crate::error::{OpError, OpResult};
use crate::hub::{Frame, Hub};
use crate::session::Session;
use crate::store::{GroupRow, GroupWithMembers};

/// The longest group description, in characters.
const MAX_DESC: usize = 256;

fn brief(group: GroupRow, role: Role) -> GroupBrief {
    GroupBrief {
        id: group.id,
        name: group.name,
        desc: group.desc,
        role,
    }
}

/// A group with members and their online state, as the client sees it.
pub(crate) fn group_info(hub: &Hub, g: GroupWithMembers) -> GroupInfo {
    GroupInfo {
        id: g.group.id,
        name: g.group.name,
        desc: g.group.desc,
        role: g.role,
        members: g
            .members
            .into_iter()
            .map(|(user, role)| member(hub, user, role))
            .collect(),
    }
}

pub(crate) async fn create_group<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: CreateGroup,
) -> OpResult {
    let me = s.user()?.id;
    check_name("group name", &req.name)?;
    check_len("desc", &req.desc, 0, MAX_DESC)?;
    let group = s.ctx.store.create_group(me, &req.name, &req.desc).await?;
    s.ctx.bus.listen(me, &[group.id]).await;
    let group = brief(group, Role::Creator);
    Ok(ok_frame(rid, &GroupReply { group }))
}

pub(crate) async fn join_group<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: GroupRef,
) -> OpResult {
    let me = s.user()?.id;
    let group = s.ctx.store.join_group(req.group, me).await?;
    // In a cluster: listen to the group's channel, then read what it committed between
    // the join and the listening (one node delivers in commit order: nothing to read).
    s.ctx.bus.listen(me, &[group.id]).await;
    if !s.ctx.trust_order {
        s.needs_catch_up = true;
    }
    let group = brief(group, Role::Member);
    Ok(ok_frame(rid, &GroupReply { group }))
}

pub(crate) async fn leave_group<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: GroupRef,
) -> OpResult {
    let me = s.user()?.id;
    s.ctx.store.leave_group(req.group, me).await?;
    Ok(ok_frame(rid, &Empty {}))
}

pub(crate) async fn delete_group<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: GroupRef,
) -> OpResult {
    let me = s.user()?.id;
    let mut members = s.ctx.store.delete_group(req.group, me).await?;
    members.retain(|m| *m != me);
    let event = Event::GroupDeleted { group: req.group };
    s.ctx.bus.publish(&members, Frame::event(&event));
    tracing::info!(group = req.group, "group deleted");
    Ok(ok_frame(rid, &Empty {}))
}

pub(crate) async fn groups<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
) -> OpResult {
    let me = s.user()?.id;
    let groups = s
        .ctx
        .store
        .user_groups(me)
        .await?
        .into_iter()
        .map(|g| group_info(&s.ctx.hub, g))
        .collect();
    Ok(ok_frame(rid, &GroupsReply { groups }))
}

pub(crate) async fn group_members<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: GroupRef,
) -> OpResult {
    let me = s.user()?.id;
    let members = s.ctx.store.group_members(req.group).await?;
    if !members.iter().any(|(user, _)| user.id == me) {
        return Err(OpError::forbidden("not a member of that group"));
    }
    let members = members
        .into_iter()
        .map(|(user, role)| member(&s.ctx.hub, user, role))
        .collect();
    Ok(ok_frame(rid, &MembersReply { members }))
}
