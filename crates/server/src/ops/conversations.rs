//! `conversations`, `read`, `typing`, `sync`: what a chat app shows beside the messages
//! themselves (the conversation list with unread counts, read receipts, typing) and the
//! catch-up of a client that keeps its own positions.

use chat_proto::event::Event;
use chat_proto::reply::{ok_frame, ConversationsReply, ReadReply, SyncReply};
use chat_proto::request::{Conversations, Read, Rid, Sync, Typing};
use chat_proto::types::ConvWith;
use chat_proto::ErrorCode;
use tokio::io::AsyncWrite;

use crate::dialect::Dialect;
use crate::error::{OpError, OpResult};
use crate::hub::Frame;
use crate::limits::TokenBucket;
use crate::session::Session;

/// `typing` events per second a session may send, and how many at once.
const TYPING_RATE: f64 = 2.0;
const TYPING_BURST: f64 = 4.0;
/// The most positions one `sync` takes.
const SYNC_POSITIONS_MAX: usize = 1000;

pub(crate) async fn conversations<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: Conversations,
) -> OpResult {
    let me = s.user()?.id;
    let limit = req.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(OpError::bad_request(
            "conversations: limit must be 1 to 100",
        ));
    }
    let page = s
        .ctx
        .store
        .conversations(me, req.before, limit as usize)
        .await?;
    let before = if page.len() == limit as usize {
        page.last().map(|(at, _)| *at)
    } else {
        None
    };
    let conversations = page
        .into_iter()
        .map(|(_, mut summary)| {
            if let ConvWith::Direct { peer } = &mut summary.with {
                peer.online = s.ctx.hub.is_online(peer.id);
            }
            summary
        })
        .collect();
    Ok(ok_frame(
        rid,
        &ConversationsReply {
            conversations,
            before,
        },
    ))
}

pub(crate) async fn read<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: Read,
) -> OpResult {
    let me = s.user()?.id;
    if req.seq < 0 {
        return Err(OpError::bad_request("read: seq must not be negative"));
    }
    let mark = s.ctx.store.mark_read(me, req.conv, req.seq).await?;
    if mark.moved && !mark.notify.is_empty() {
        let event = Event::Read {
            conv: req.conv,
            user: me,
            seq: mark.read,
        };
        s.ctx.bus.publish(&mark.notify, Frame::event(&event));
    }
    Ok(ok_frame(
        rid,
        &ReadReply {
            conv: req.conv,
            read: mark.read,
        },
    ))
}

pub(crate) async fn typing<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: Typing,
) -> OpResult {
    let me = s.user()?.clone();
    let allowed = s.login.as_mut().is_some_and(|login| {
        login
            .typing
            .get_or_insert_with(|| TokenBucket::new(TYPING_RATE, TYPING_BURST))
            .take()
    });
    if !allowed {
        return Err(OpError::new(
            ErrorCode::RateLimited,
            "typing: at most 2 a second",
        ));
    }
    let (group, peers) = s.ctx.store.conv_peers(me.id, req.conv).await?;
    let online: Vec<_> = peers
        .into_iter()
        .filter(|peer| s.ctx.hub.is_online(*peer))
        .collect();
    if !online.is_empty() {
        let event = Event::Typing {
            conv: req.conv,
            user: me.id,
            name: me.name,
            group,
        };
        s.ctx.bus.publish(&online, Frame::event(&event));
    }
    Ok(ok_frame(rid, &chat_proto::reply::Empty {}))
}

pub(crate) async fn sync<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: Sync,
) -> OpResult {
    let me = s.user()?.id;
    let limit = req.limit.unwrap_or(500);
    if !(1..=1000).contains(&limit) {
        return Err(OpError::bad_request("sync: limit must be 1 to 1000"));
    }
    if req.positions.len() > SYNC_POSITIONS_MAX {
        return Err(OpError::bad_request(format!(
            "sync: at most {SYNC_POSITIONS_MAX} positions"
        )));
    }
    let (messages, more) = s.ctx.store.sync(me, &req.positions, limit as usize).await?;
    Ok(ok_frame(rid, &SyncReply { messages, more }))
}
