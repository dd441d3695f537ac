//! `add_friend`, `remove_friend`, `friends`, and presence announcements to friends.

use chat_proto::reply::{ok_frame, Empty, FriendReply, FriendsReply};
use chat_proto::request::{Rid, UserRef};
use chat_proto::types::Friend;
use chat_proto::{Event, UserId};
use tokio::io::AsyncWrite;

use crate::dialect::Dialect;
use crate::error::{OpError, OpResult};
use crate::hub::Frame;
use crate::session::Session;
use crate::state::Ctx;

pub(crate) async fn add_friend<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: UserRef,
) -> OpResult {
    let me = s.user()?.clone();
    if req.id == me.id {
        return Err(OpError::bad_request("you cannot befriend yourself"));
    }
    let other = s.ctx.store.add_friend(me.id, req.id).await?;
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
    Ok(ok_frame(rid, &FriendReply { friend }))
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

pub(crate) async fn friends<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
) -> OpResult {
    let me = s.user()?.id;
    let friends = s
        .ctx
        .store
        .friends(me)
        .await?
        .into_iter()
        .map(|f| Friend {
            online: s.ctx.hub.is_online(f.id),
            id: f.id,
            name: f.name,
        })
        .collect();
    Ok(ok_frame(rid, &FriendsReply { friends }))
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
