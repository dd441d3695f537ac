//! Commands and events of consent: friend requests, blocks and group invitations.

use chat_proto::reply::{BlockedReply, FriendRequestsReply, InvitesReply};
use chat_proto::request::{GroupRef, GroupUser, Request, UserRef};
use chat_proto::types::User;
use chat_proto::Event;

use super::{who_of, App, Exit};
use crate::command::Command;
use crate::format::{clean, who};

impl App {
    /// Runs a consent command.
    pub(super) async fn consent(&mut self, command: Command) -> Result<(), Exit> {
        match command {
            Command::Invite { group, id } => {
                let req = Request::GroupInvite(GroupUser { group, id });
                if self.ok::<serde_json::Value>(&req).await?.is_some() {
                    let (user, title) = (self.user_label(id), self.group_label(group));
                    self.out.line(format!("ok: invited {user} into {title}"));
                }
            }
            Command::Invites => {
                if let Some(reply) = self.ok::<InvitesReply>(&Request::Invites).await? {
                    let mut lines = vec![format!("invitations ({}):", reply.invites.len())];
                    for i in &reply.invites {
                        self.learn(i.by.id, &i.by.name);
                        lines.push(format!(
                            "  group {} \"{}\" from {} (joingroup:{} or declineinvite:{})",
                            i.group,
                            clean(&i.name),
                            who_of(&i.by),
                            i.group,
                            i.group
                        ));
                    }
                    self.out.lines(lines);
                }
            }
            Command::DeclineInvite(group) => {
                let req = Request::DeclineInvite(GroupRef { group });
                if self.ok::<serde_json::Value>(&req).await?.is_some() {
                    self.out
                        .line(format!("ok: declined the invitation into group {group}"));
                }
            }
            Command::Requests => {
                let req = Request::FriendRequests;
                if let Some(reply) = self.ok::<FriendRequestsReply>(&req).await? {
                    let mut lines = vec![format!(
                        "friend requests to you ({}), answer with addfriend:ID or decline:ID:",
                        reply.incoming.len()
                    )];
                    lines.extend(self.listed(&reply.incoming));
                    lines.push(format!("your requests ({}):", reply.outgoing.len()));
                    lines.extend(self.listed(&reply.outgoing));
                    self.out.lines(lines);
                }
            }
            Command::Decline(id) => {
                let req = Request::DeclineFriend(UserRef { id });
                if self.ok::<serde_json::Value>(&req).await?.is_some() {
                    let label = self.user_label(id);
                    self.out
                        .line(format!("ok: declined {label}'s friend request"));
                }
            }
            Command::Block(id) => {
                let req = Request::Block(UserRef { id });
                if self.ok::<serde_json::Value>(&req).await?.is_some() {
                    let label = self.user_label(id);
                    self.out.line(format!("ok: you block {label}"));
                    if let Some(me) = &mut self.me {
                        me.friends.retain(|f| f.id != id);
                    }
                }
            }
            Command::Unblock(id) => {
                let req = Request::Unblock(UserRef { id });
                if self.ok::<serde_json::Value>(&req).await?.is_some() {
                    let label = self.user_label(id);
                    self.out.line(format!("ok: you no longer block {label}"));
                }
            }
            Command::Blocked => {
                if let Some(reply) = self.ok::<BlockedReply>(&Request::Blocked).await? {
                    let mut lines = vec![format!("you block ({}):", reply.users.len())];
                    lines.extend(self.listed(&reply.users));
                    self.out.lines(lines);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn listed(&mut self, users: &[User]) -> Vec<String> {
        users
            .iter()
            .map(|u| {
                self.learn(u.id, &u.name);
                format!("  {}", who_of(u))
            })
            .collect()
    }

    /// Shows a consent event.
    pub(super) fn consent_event(&mut self, event: Event) {
        match event {
            Event::FriendRequest { from } => {
                self.learn(from.id, &from.name);
                self.out.line(format!(
                    "[friend] {} asks to be your friend (addfriend:{} to accept, decline:{} to decline)",
                    who(&from.name, from.id),
                    from.id,
                    from.id
                ));
            }
            Event::GroupInvite(invite) => {
                self.learn(invite.by.id, &invite.by.name);
                self.out.line(format!(
                    "[group {}] {} invites you into \"{}\" (joingroup:{} to join)",
                    invite.group,
                    who_of(&invite.by),
                    clean(&invite.name),
                    invite.group
                ));
            }
            Event::MemberJoined { group, user } => {
                self.learn(user.id, &user.name);
                let title = self.group_label(group);
                self.out
                    .line(format!("[group {group}] {} joined {title}", who_of(&user)));
            }
            Event::MemberLeft {
                group,
                user,
                removed,
            } => {
                let (label, title) = (self.user_label(user), self.group_label(group));
                let how = if removed { "was removed from" } else { "left" };
                self.out
                    .line(format!("[group {group}] {label} {how} {title}"));
            }
            _ => {}
        }
    }
}
