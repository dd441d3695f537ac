//! `send`, `group_send`, `history`, `ack`.
//!
//! A send returns once the store has committed the message; the dispatcher delivers it
//! from the commit log (see [`crate::dispatch`]).

use chat_proto::reply::{ok_frame, Empty, HistoryReply, MsgReply};
use chat_proto::request::{Ack, GroupSend, History, Rid, Send};
use chat_proto::types::MsgRef;
use tokio::io::AsyncWrite;

use chat_proto::ErrorCode;

use super::{check_len, check_text};
use crate::dialect::Dialect;
use crate::error::{OpError, OpResult};
use crate::session::Session;
use crate::store::Conversation;

pub(crate) async fn send<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: Send,
) -> OpResult {
    let me = s.user()?;
    check_text("text", &req.text, 1, s.ctx.config.max_text)?;
    check_not_muted(s)?;
    if req.to == me.id {
        return Err(OpError::bad_request(
            "you cannot send a message to yourself",
        ));
    }
    super::friends::check_not_blocked(&s.ctx, me.id, req.to)?;
    check_cmid(req.cmid.as_deref())?;
    let msg = (s.ctx.store)
        .send(me, req.to, &req.text, req.cmid.as_deref())
        .await?;
    s.sent(msg.conv, msg.seq);
    s.ctx.metrics.direct_messages.inc();
    let msg = MsgRef {
        id: msg.id,
        ts: msg.ts,
        conv: msg.conv,
        seq: msg.seq,
    };
    Ok(ok_frame(rid, &MsgReply { msg }))
}

pub(crate) async fn group_send<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: GroupSend,
) -> OpResult {
    let me = s.user()?;
    check_text("text", &req.text, 1, s.ctx.config.max_text)?;
    check_not_muted(s)?;
    check_cmid(req.cmid.as_deref())?;
    let msg = (s.ctx.store)
        .group_send(me, req.group, &req.text, req.cmid.as_deref())
        .await?;
    s.sent(msg.conv, msg.seq);
    s.ctx.metrics.group_messages.inc();
    let msg = MsgRef {
        id: msg.id,
        ts: msg.ts,
        conv: msg.conv,
        seq: msg.seq,
    };
    Ok(ok_frame(rid, &MsgReply { msg }))
}

/// A client message id is 1 to 64 characters.
fn check_cmid(cmid: Option<&str>) -> Result<(), OpError> {
    match cmid {
        Some(cmid) => check_len("cmid", cmid, 1, 64),
        None => Ok(()),
    }
}

/// A muted user may not send; the message says until when.
fn check_not_muted<W: AsyncWrite + Unpin, D: Dialect>(s: &Session<W, D>) -> Result<(), OpError> {
    let me = s.user()?.id;
    match s.ctx.mutes.muted_until(me, super::auth::now_ms()) {
        None => Ok(()),
        Some(until) => Err(OpError::forbidden(format!(
            "you are muted until {} (ms since the epoch: {until})",
            super::auth::format_ms(until)
        ))),
    }
}

pub(crate) async fn history<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: History,
) -> OpResult {
    let me = s.user()?.id;
    let conversation = match (req.with, req.group, req.conv) {
        (Some(with), None, None) => Conversation::With(with),
        (None, Some(group), None) => Conversation::Group(group),
        (None, None, Some(conv)) => Conversation::of(me, conv)
            .ok_or_else(|| OpError::new(ErrorCode::NotFound, "no such conversation"))?,
        _ => {
            return Err(OpError::bad_request(
                "history: give one of `with`, `group` or `conv`",
            ))
        }
    };
    let limit = req.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(OpError::bad_request("history: limit must be 1 to 100"));
    }
    let messages = s
        .ctx
        .store
        .history(me, conversation, req.before, limit as usize)
        .await?;
    Ok(ok_frame(rid, &HistoryReply { messages }))
}

pub(crate) async fn ack<W: AsyncWrite + Unpin, D: Dialect>(
    s: &mut Session<W, D>,
    rid: &Rid,
    req: Ack,
) -> OpResult {
    match req {
        Ack {
            id: Some(id),
            conv: None,
            seq: None,
        } => s.ack(id).await?,
        Ack {
            id: None,
            conv: Some(conv),
            seq: Some(seq),
        } => s.ack_conv(conv, seq).await?,
        _ => return Err(OpError::bad_request("ack: give `id`, or `conv` and `seq`")),
    }
    Ok(ok_frame(rid, &Empty {}))
}
