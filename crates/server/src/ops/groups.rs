//! `create_group`, `join_group`, `leave_group`, `delete_group`, `groups`, `group_members`,
//! and who may come in: `group_invite`, `decline_invite`, `invites`, `group_role`.
//!
//! A group is closed unless its creator opens it: only those invited by the creator or
//! one of the group's admins may join, and a removed member stays out until invited
//! again. A new member sees the history from its join on, unless the group shares its
//! history. Members are told when someone joins or leaves.

use chat_proto::reply::{ok_frame, Empty, GroupReply, GroupsReply, InvitesReply, MembersReply};
use chat_proto::request::{CreateGroup, GroupMembers, GroupRef, GroupRole, GroupUser, Page, Rid};
use chat_proto::types::{GroupBrief, GroupInfo, Invite, Role, User};
use chat_proto::{Event, GroupId, UserId};
use tokio::io::AsyncWrite;

use super::auth::member;
use super::{check_name, check_text};
use crate::dialect::Dialect;
use crate::error::{OpError, OpResult};
use crate::hub::{Frame, Hub};
use crate::session::Session;
use crate::state::Ctx;
use crate::store::{GroupRow, GroupSettings, GroupWithMembers, GroupsPage};

/// The longest group description, in characters.
const MAX_DESC: usize = 256;

fn brief(group: GroupRow, role: Role) -> GroupBrief {
    GroupBrief {
        id: group.id,
        name: group.name,
        desc: group.desc,
        role,
        open: group.settings.open,
        shared_history: group.settings.shared_history,
    }
}

/// A group with members and their online state, as the client sees it.
pub(crate) fn group_info(hub: &Hub, g: GroupWithMembers) -> GroupInfo {
    GroupInfo {
        id: g.group.id,
        name: g.group.name,
        desc: g.group.desc,
        role: g.role,
        open: g.group.settings.open,
        shared_history: g.group.settings.shared_history,
        member_count: g.member_count,
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
    check_text("desc", &req.desc, 0, MAX_DESC)?;
    let settings = GroupSettings {
        open: req.open,
        shared_history: req.shared_history,
    };
    let group = s
        .ctx
        .store
        .create_group(me, &req.name, &req.desc, settings)
        .await?;
    s.ctx.bus.listen(me, &[group.id]).await;
    let group = brief(group, Role::Creator);
    Ok(ok_frame(rid, &GroupReply { group }))
}

pub(crate) async fn join_group<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: GroupRef,
) -> OpResult {
    let me = s.user()?.clone();
    let group = s.ctx.store.join_group(req.group, me.id).await?;
    // In a cluster: listen to the group's channel, then read what it committed between
    // the join and the listening (one node delivers in commit order: nothing to read).
    s.ctx.bus.listen(me.id, &[group.id]).await;
    if !s.ctx.trust_order {
        s.needs_catch_up = true;
    }
    let event = Event::MemberJoined {
        group: group.id,
        user: User {
            id: me.id,
            name: me.name,
        },
    };
    tell_members(&s.ctx, group.id, me.id, &event).await;
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
    let event = Event::MemberLeft {
        group: req.group,
        user: me,
        removed: false,
    };
    tell_members(&s.ctx, req.group, me, &event).await;
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
    req: Page,
) -> OpResult {
    let me = s.user()?.id;
    let limit = page_limit(&req)?;
    let page = GroupsPage {
        after: req.after.unwrap_or(0),
        limit: limit + 1,
        members: chat_proto::types::INLINE_MEMBERS,
    };
    let mut groups = s.ctx.store.user_groups(me, page).await?;
    let more = groups.len() > limit;
    groups.truncate(limit);
    let groups = groups
        .into_iter()
        .map(|g| group_info(&s.ctx.hub, g))
        .collect();
    Ok(ok_frame(rid, &GroupsReply { groups, more }))
}

pub(crate) async fn group_members<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: GroupMembers,
) -> OpResult {
    let me = s.user()?.id;
    let limit = page_limit(&req.page)?;
    let after = req.page.after.unwrap_or(0);
    let mut members = s
        .ctx
        .store
        .group_members_page(req.group, me, after, limit + 1)
        .await?;
    let more = members.len() > limit;
    members.truncate(limit);
    let members = members
        .into_iter()
        .map(|(user, role)| member(&s.ctx.hub, user, role))
        .collect();
    Ok(ok_frame(rid, &MembersReply { members, more }))
}

/// The page size a request asks for, checked.
pub(crate) fn page_limit(page: &Page) -> Result<usize, OpError> {
    page.limit()
        .ok_or_else(|| OpError::bad_request(format!("limit must be 1 to {}", Page::MAX)))
}

pub(crate) async fn group_invite<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: GroupUser,
) -> OpResult {
    let me = s.user()?.clone();
    if req.id == me.id {
        return Err(OpError::bad_request("you cannot invite yourself"));
    }
    let group = s.ctx.store.group_invite(req.group, me.id, req.id).await?;
    let invite = Invite {
        group: group.id,
        name: group.name,
        desc: group.desc,
        by: User {
            id: me.id,
            name: me.name,
        },
    };
    s.ctx
        .bus
        .publish(&[req.id], Frame::event(&Event::GroupInvite(invite)));
    tracing::info!(by = me.id, group = req.group, user = req.id, "group_invite");
    Ok(ok_frame(rid, &Empty {}))
}

pub(crate) async fn decline_invite<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: GroupRef,
) -> OpResult {
    let me = s.user()?.id;
    s.ctx.store.decline_invite(req.group, me).await?;
    Ok(ok_frame(rid, &Empty {}))
}

pub(crate) async fn invites<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
) -> OpResult {
    let me = s.user()?.id;
    let invites = s.ctx.store.invites(me).await?;
    Ok(ok_frame(rid, &InvitesReply { invites }))
}

pub(crate) async fn group_role<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: GroupRole,
) -> OpResult {
    let me = s.user()?.id;
    if req.role == Role::Creator {
        return Err(OpError::bad_request(
            "group_role: role is `admin` or `member`",
        ));
    }
    s.ctx
        .store
        .set_group_role(req.group, me, req.id, req.role)
        .await?;
    tracing::info!(
        creator = me,
        group = req.group,
        user = req.id,
        role = req.role.as_str(),
        "group_role"
    );
    Ok(ok_frame(rid, &Empty {}))
}

/// Sends `event` to the group's members but `except`.
pub(crate) async fn tell_members(ctx: &Ctx, group: GroupId, except: UserId, event: &Event) {
    match ctx.store.group_member_ids(group).await {
        Ok(members) => {
            let to: Vec<UserId> = members
                .into_iter()
                .map(|(user, _)| user)
                .filter(|user| *user != except)
                .collect();
            if !to.is_empty() {
                ctx.bus.publish(&to, Frame::event(event));
            }
        }
        // The change is committed; only the notice is lost.
        Err(e) => tracing::warn!(group, error = %e, "could not tell a group's members"),
    }
}
