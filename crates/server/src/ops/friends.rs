//! Friends with consent: `add_friend` (a request, or the answer to one), `decline_friend`,
//! `friend_requests`, `remove_friend`, `friends`; blocking: `block`, `unblock`, `blocked`;
//! and presence announcements to friends.
//!
//! Friendship shows a user's presence to the other, so it takes both: `add_friend` asks,
//! and the other's `add_friend` accepts. A block ends a friendship and any request both
//! ways, and refuses the blocked user's messages and requests with a plain `forbidden`
//! ("refused") that does not say why.

use chat_proto::reply::{ok_frame, BlockedReply, Empty, FriendReply, FriendRequestsReply};
use chat_proto::request::{Page, Rid, UserRef};
use chat_proto::types::{Friend, User};
use chat_proto::{Event, UserId};
use tokio::io::AsyncWrite;

use crate::dialect::Dialect;
use crate::error::{OpError, OpResult};
use crate::hub::Frame;
use crate::session::Session;
use crate::state::Ctx;
use crate::store::Befriended;

pub(crate) async fn add_friend<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: UserRef,
) -> OpResult {
    let me = s.user()?.clone();
    if req.id == me.id {
        return Err(OpError::bad_request("you cannot befriend yourself"));
    }
    match s.ctx.store.add_friend(me.id, req.id).await? {
        Befriended::Friends(other) => {
            friends_changed(s);
            let event = Event::FriendAdded {
                friend: Friend {
                    id: me.id,
                    name: me.name,
                    online: true,
                },
            };
            s.ctx.bus.publish(&[other.id], Frame::event(&event));
            let friend = Friend {
                online: s.ctx.hub.is_online(other.id),
                id: other.id,
                name: other.name,
            };
            let reply = FriendReply {
                friend: Some(friend),
                requested: false,
            };
            Ok(ok_frame(rid, &reply))
        }
        Befriended::Requested(other) => {
            let event = Event::FriendRequest {
                from: User {
                    id: me.id,
                    name: me.name,
                },
            };
            s.ctx.bus.publish(&[other.id], Frame::event(&event));
            let reply = FriendReply {
                friend: None,
                requested: true,
            };
            Ok(ok_frame(rid, &reply))
        }
    }
}

pub(crate) async fn remove_friend<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: UserRef,
) -> OpResult {
    let me = s.user()?.id;
    s.ctx.store.remove_friend(me, req.id).await?;
    friends_changed(s);
    let event = Event::FriendRemoved { user: me };
    s.ctx.bus.publish(&[req.id], Frame::event(&event));
    Ok(ok_frame(rid, &Empty {}))
}

pub(crate) async fn decline_friend<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: UserRef,
) -> OpResult {
    let me = s.user()?.id;
    s.ctx.store.decline_friend(me, req.id).await?;
    Ok(ok_frame(rid, &Empty {}))
}

pub(crate) async fn friend_requests<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
) -> OpResult {
    let me = s.user()?.id;
    let (incoming, outgoing) = s.ctx.store.friend_requests(me).await?;
    Ok(ok_frame(rid, &FriendRequestsReply { incoming, outgoing }))
}

pub(crate) async fn friends<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: Page,
) -> OpResult {
    let me = s.user()?.id;
    let limit = super::groups::page_limit(&req)?;
    let after = req.after.unwrap_or(0);
    let mut friends: Vec<User> = s
        .ctx
        .store
        .friends(me)
        .await?
        .into_iter()
        .filter(|f| f.id > after)
        .take(limit + 1)
        .collect();
    let more = friends.len() > limit;
    friends.truncate(limit);
    let friends = friends
        .into_iter()
        .map(|f| Friend {
            online: s.ctx.hub.is_online(f.id),
            id: f.id,
            name: f.name,
        })
        .collect();
    Ok(ok_frame(
        rid,
        &chat_proto::reply::FriendsReply { friends, more },
    ))
}

pub(crate) async fn block<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: UserRef,
) -> OpResult {
    let me = s.user()?.id;
    if req.id == me {
        return Err(OpError::bad_request("you cannot block yourself"));
    }
    let were_friends = s.ctx.store.block(me, req.id).await?;
    s.ctx.blocks.set(me, req.id, true);
    s.ctx.bus.blocked(me, req.id, true);
    if were_friends {
        friends_changed(s);
        // As a removal: the blocked user learns no more than that.
        let event = Event::FriendRemoved { user: me };
        s.ctx.bus.publish(&[req.id], Frame::event(&event));
    }
    tracing::info!(user = me, "block");
    Ok(ok_frame(rid, &Empty {}))
}

pub(crate) async fn unblock<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: UserRef,
) -> OpResult {
    let me = s.user()?.id;
    s.ctx.store.unblock(me, req.id).await?;
    s.ctx.blocks.set(me, req.id, false);
    s.ctx.bus.blocked(me, req.id, false);
    Ok(ok_frame(rid, &Empty {}))
}

pub(crate) async fn blocked<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
) -> OpResult {
    let me = s.user()?.id;
    let users = s.ctx.store.blocked(me).await?;
    Ok(ok_frame(rid, &BlockedReply { users }))
}

/// Refuses what `from` sends to `to` when either blocks the other.
pub(crate) fn check_not_blocked(ctx: &Ctx, from: UserId, to: UserId) -> Result<(), OpError> {
    if ctx.blocks.refuses(to, from) {
        return Err(OpError::forbidden("refused"));
    }
    if ctx.blocks.refuses(from, to) {
        return Err(OpError::forbidden(
            "you block this user; unblock them first",
        ));
    }
    Ok(())
}

/// Tells `user`'s friends that it came online or went offline.
pub(crate) fn announce_presence(ctx: &Ctx, user: UserId, online: bool, friends: &[UserId]) {
    if !friends.is_empty() {
        ctx.bus
            .publish(friends, Frame::event(&Event::Presence { user, online }));
    }
}

/// Notes that the session's user has a changed friendship.
fn friends_changed<W: AsyncWrite + Unpin, D: Dialect>(s: &mut Session<W, D>) {
    if let Some(login) = s.login.as_mut() {
        login.friends_changed = true;
    }
}
