//! One connection: the loop that reads frames, runs ops, and writes replies and events.
//!
//! Framing lives in the transport ([`crate::accept`] picks the codec); the loop only sees
//! a stream of frames and a writer, so every transport shares it. One `select!` waits on
//! the next frame, the session's outbox (its kick signal and queued frames), the
//! server's shutdown and the login or idle deadline. A request runs to completion before the next is read,
//! so replies come in request order.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

use chat_proto::codec::FrameError;
use chat_proto::event::kick_reason;
use chat_proto::request::Rid;
use chat_proto::types::User;
use chat_proto::{ConvId, ErrorCode, Event, MsgId, Seq, UserId};
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::accept::{Accepted, FrameSource};
use crate::delivered::{Delivered, Place};
use crate::dialect::{Dialect, Inbound};
use crate::error::OpError;
use crate::hub::{Frame, Outbox, Outgoing};
use crate::limits::AddressSlot;
use crate::limits::{RequestLimit, Verdict};
use crate::ops;
use crate::state::Ctx;

/// How many pending messages one store read fetches during a catch-up.
const CATCH_UP_PAGE: usize = 512;
/// How many queued frames go into one write.
const WRITE_BATCH: usize = 256;

/// The logged-in part of a session.
pub(crate) struct Login {
    pub(crate) user: User,
    /// The hash of the token this session logged in with or was given.
    pub(crate) token_hash: crate::password::TokenHash,
    outbox: Arc<Outbox>,
    /// What it has of each conversation, and what is written and not acked.
    delivered: Delivered,
    /// `typing` events this session may send (made at the first one).
    pub(crate) typing: Option<crate::limits::TokenBucket>,
    /// The friends at login, told when the session ends, unless `friends_changed`.
    pub(crate) friends: Vec<UserId>,
    /// A friendship of the user changed during the session: re-read the friends at the end.
    pub(crate) friends_changed: bool,
}

/// A connection's state; the ops in [`crate::ops`] act on it.
pub(crate) struct Session<W, D> {
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) conn_id: u64,
    /// The client's address (for the per-address limits on registering and logging in).
    pub(crate) peer: IpAddr,
    limit: RequestLimit,
    pub(crate) login: Option<Login>,
    /// Set by `login`: replay pending messages and send `synced` after the reply.
    pub(crate) needs_sync: bool,
    /// Set by an op after which the session reads what is pending (a join in a cluster).
    pub(crate) needs_catch_up: bool,
    /// When a connection that is not logged in is closed; restarts at logout.
    login_deadline: Instant,
    /// Its place under `--max-connections`.
    _slot: OwnedSemaphorePermit,
    /// Its place under `--max-connections-per-address`.
    _address_slot: AddressSlot,
    writer: W,
    pub(crate) dialect: D,
    out: Vec<u8>,
}

enum Step {
    Continue,
    Close,
    /// Close a connection that sent more than it may: half-close, then read and drop
    /// what it still sends, for a moment, before closing. Closing a socket with unread
    /// input makes the kernel send a reset, and a reset can make the client's kernel
    /// throw away the `kicked` frame it has not read yet.
    CloseLingering,
}

/// How long a flooding connection's input is drained after its `kicked` (see
/// [`Step::CloseLingering`]).
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

impl<W: AsyncWrite + Unpin, D: Dialect> Session<W, D> {
    pub(crate) fn new(ctx: Arc<Ctx>, accepted: Accepted, writer: W, dialect: D) -> Session<W, D> {
        Session {
            limit: RequestLimit::new(ctx.config.request_rate, ctx.config.request_burst),
            ctx,
            conn_id: accepted.conn_id,
            peer: accepted.peer,
            login: None,
            needs_sync: false,
            needs_catch_up: false,
            login_deadline: accepted.login_deadline,
            _slot: accepted.slot,
            _address_slot: accepted.address_slot,
            writer,
            dialect,
            out: Vec::new(),
        }
    }

    /// The logged-in user.
    pub(crate) fn user(&self) -> Result<&User, OpError> {
        self.login
            .as_ref()
            .map(|l| &l.user)
            .ok_or_else(|| OpError::new(ErrorCode::Unauthenticated, "log in first"))
    }

    pub(crate) async fn run<S: FrameSource>(&mut self, mut frames: S, shutdown: CancellationToken) {
        let idle_timeout = self.ctx.config.idle_timeout;
        // Frames may be `--max-frame` long once logged in, much shorter before.
        let mut max_frame = self.ctx.config.frame_limit(false);
        let mut idle_deadline = Instant::now() + idle_timeout;
        // One timer, moved only when it fires early: cheaper than a new one per frame.
        let timer = tokio::time::sleep_until(self.next_deadline(idle_deadline).0);
        tokio::pin!(timer);
        loop {
            let outbox = self.login.as_ref().map(|l| l.outbox.clone());
            let step = tokio::select! {
                biased;
                // The ending paths are boxed: they run once, and inline they would widen
                // every session's future by a write and its timer.
                _ = shutdown.cancelled() => Box::pin(self.shut_down()).await,
                // Kicks, then deliveries, before new requests: a client that pipelines
                // requests must not starve its own incoming messages; reading it later is
                // its backpressure.
                outgoing = next_outgoing(outbox.as_deref()) => match outgoing {
                    Outgoing::Kicked(reason) => Box::pin(self.kicked(reason)).await,
                    Outgoing::Frames(frames) => Box::pin(self.on_queued(frames)).await,
                },
                frame = frames.next() => match frame {
                    Some(Ok(line)) => {
                        idle_deadline = Instant::now() + idle_timeout;
                        Box::pin(self.on_frame(&line)).await
                    }
                    Some(Err(FrameError::TooLarge { limit })) => {
                        let e = OpError::new(
                            ErrorCode::TooLarge,
                            format!("frame longer than {limit} bytes"),
                        );
                        self.dialect.reply("", &e.frame(&Rid::NONE), &mut self.out);
                        Box::pin(self.kicked(kick_reason::TOO_LARGE)).await
                    }
                    Some(Err(FrameError::Io(_))) | None => Step::Close,
                },
                _ = &mut timer => {
                    let (deadline, reason) = self.next_deadline(idle_deadline);
                    if deadline <= Instant::now() {
                        Box::pin(self.kicked(reason)).await
                    } else {
                        timer.as_mut().reset(deadline);
                        Step::Continue
                    }
                }
            };
            match step {
                Step::Continue => {}
                Step::Close => break,
                Step::CloseLingering => {
                    let _ = self.writer.shutdown().await;
                    let drain = async { while frames.next().await.is_some() {} };
                    let _ = tokio::time::timeout(LINGER, drain).await;
                    break;
                }
            }
            let wanted = self.ctx.config.frame_limit(self.login.is_some());
            if wanted != max_frame {
                frames.set_max_frame(wanted);
                max_frame = wanted;
            }
            // A logout restarts the login timer, which may be due before the idle one.
            if self.login.is_none() && self.login_deadline < timer.deadline() {
                timer.as_mut().reset(self.login_deadline);
            }
        }
        Box::pin(self.end()).await;
    }

    /// The deadline that applies now (login or idle) and the kick reason when it passes.
    fn next_deadline(&self, idle_deadline: Instant) -> (Instant, &'static str) {
        match &self.login {
            None if self.login_deadline < idle_deadline => {
                (self.login_deadline, kick_reason::LOGIN_TIMEOUT)
            }
            _ => (idle_deadline, kick_reason::IDLE_TIMEOUT),
        }
    }

    async fn on_frame(&mut self, line: &[u8]) -> Step {
        let (op, reply) = match self.dialect.decode(line, self.login.is_some()) {
            Inbound::Request(rid, req) => {
                let op = req.op();
                let result = match self.limit.check() {
                    Verdict::Allow => Ok(()),
                    Verdict::Refuse => {
                        self.ctx.metrics.rate_limited.inc();
                        Err(OpError::new(
                            ErrorCode::RateLimited,
                            "too many requests; slow down",
                        ))
                    }
                    Verdict::Close => {
                        self.ctx.metrics.rate_limited.inc();
                        return self.kicked(kick_reason::RATE_LIMITED).await;
                    }
                };
                let result = if let Err(e) = result {
                    Err(e)
                } else if self.login.is_none() && !req.allowed_before_login() {
                    Err(OpError::new(ErrorCode::Unauthenticated, "log in first"))
                } else {
                    // Boxed: an op's future lives only while it runs, instead of widening
                    // every idle session's future by the largest op.
                    Box::pin(ops::dispatch(self, &rid, req)).await
                };
                let reply = result.unwrap_or_else(|e| {
                    self.ctx.metrics.error(e.code.as_str());
                    e.frame(&rid)
                });
                (op, reply)
            }
            Inbound::Bad(bad) => {
                self.ctx.metrics.error(ErrorCode::BadRequest.as_str());
                ("", OpError::bad_request(bad.message).frame(&bad.rid))
            }
            Inbound::Ignore => return Step::Continue,
        };
        self.dialect.reply(op, &reply, &mut self.out);
        if self.flush().await.is_err() {
            return Step::Close;
        }
        if std::mem::take(&mut self.needs_catch_up) && self.catch_up().await.is_err() {
            return Step::Close;
        }
        if std::mem::take(&mut self.needs_sync) {
            if self.catch_up().await.is_err() {
                return Step::Close;
            }
            if self.write_event(&Event::Synced).await.is_err() {
                return Step::Close;
            }
            self.ack_written().await;
        }
        Step::Continue
    }

    /// Writes queued frames in one write (after filling a gap, if one shows).
    async fn on_queued(&mut self, frames: VecDeque<Arc<Frame>>) -> Step {
        // Counted once per write, not per message: the metrics stay off the per-message
        // path (the latency histogram takes a lock).
        let (mut delivered, mut oldest_ms) = (0, i64::MAX);
        for frame in &frames {
            if frame.catch_up {
                // The node may have missed publications: read what is pending.
                if self.flush().await.is_err() || self.catch_up().await.is_err() {
                    return Step::Close;
                }
                continue;
            }
            if let (Some(_), Some(login)) = (frame.msg_id, self.login.as_ref()) {
                let (conv, seq) = frame.conv_seq;
                match login.delivered.place(conv, seq, self.ctx.trust_order) {
                    Place::Dup => continue,
                    Place::Next => {}
                    Place::Gap(after) => {
                        if !self.fill(conv, after, seq).await {
                            // Not written: it stays pending, and the next message of the
                            // conversation (or the next login) tries again.
                            continue;
                        }
                    }
                }
            }
            self.append(frame);
            if frame.msg_id.is_some() {
                delivered += 1;
                oldest_ms = oldest_ms.min(frame.ts_ms);
            }
        }
        drop(frames);
        if self.flush().await.is_err() {
            return Step::Close;
        }
        if delivered > 0 {
            let metrics = &self.ctx.metrics;
            metrics.deliveries.inc_by(delivered);
            let age_ms = crate::ops::auth::now_ms().saturating_sub(oldest_ms);
            metrics
                .delivery_latency
                .observe(age_ms.max(0) as f64 / 1000.0);
        }
        self.ack_written().await;
        Step::Continue
    }

    /// Writes what `conv` holds between what the session has and `before`, from the
    /// store. False if the store cannot say.
    async fn fill(&mut self, conv: ConvId, mut after: Option<Seq>, before: Seq) -> bool {
        let Some(me) = self.login.as_ref().map(|l| l.user.id) else {
            return false;
        };
        loop {
            let page = match self
                .ctx
                .store
                .fill(me, conv, after, before, CATCH_UP_PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, conv, "cannot fill a gap");
                    return false;
                }
            };
            let full = page.len() == CATCH_UP_PAGE;
            for msg in page {
                after = Some(msg.seq);
                self.append_msg(&msg);
            }
            if !full {
                break;
            }
        }
        // What is still missing below `before` is gone (purged): nothing to wait for.
        if let Some(login) = self.login.as_mut() {
            login.delivered.passed(conv, before - 1);
        }
        true
    }

    /// Writes a message read from the store (the user's own only counts as had).
    fn append_msg(&mut self, msg: &chat_proto::types::Msg) {
        let Some(login) = self.login.as_mut() else {
            return;
        };
        if login.delivered.place(msg.conv, msg.seq, true) == Place::Dup {
            return;
        }
        if msg.from == login.user.id {
            login.delivered.passed(msg.conv, msg.seq);
            return;
        }
        let frame = Frame::msg(
            msg.id,
            msg.conv,
            msg.seq,
            msg.ts,
            chat_proto::event::msg_json(msg),
        );
        self.append(&frame);
        self.ctx.metrics.deliveries.inc();
    }

    /// The user sent `seq` of `conv` from this session.
    pub(crate) fn sent(&mut self, conv: ConvId, seq: Seq) {
        if let Some(login) = self.login.as_mut() {
            login.delivered.sent(conv, seq);
        }
    }

    /// For a dialect whose clients cannot ack: everything written is delivered.
    async fn ack_written(&mut self) {
        if !self.dialect.acks_on_write() {
            return;
        }
        if let Err(e) = self.ack(MsgId::MAX).await {
            // Still pending: sent again at the next login.
            tracing::warn!(code = %e.code, "cannot ack written messages");
        }
    }

    /// Adds a frame to the output buffer (a message frame has been placed already).
    fn append(&mut self, frame: &Frame) {
        if let Some(login) = self.login.as_mut() {
            if let Some(id) = frame.msg_id {
                let (conv, seq) = frame.conv_seq;
                login.delivered.written(id, conv, seq);
            }
            login.friends_changed |= frame.changes_friends;
        }
        self.dialect.event(frame, &mut self.out);
    }

    /// Sends every pending message the session does not have yet from the store: per
    /// conversation in seq order, oldest first overall.
    pub(crate) async fn catch_up(&mut self) -> std::io::Result<()> {
        loop {
            let Some(login) = self.login.as_ref() else {
                return Ok(());
            };
            let user = login.user.id;
            let ttl = i64::try_from(self.ctx.config.pending_ttl.as_millis()).unwrap_or(i64::MAX);
            let since = crate::ops::auth::now_ms().saturating_sub(ttl);
            let page = match self
                .ctx
                .store
                .pending(user, login.delivered.known(), since, CATCH_UP_PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    // Still pending in the store; the next login or lag retries.
                    tracing::warn!(error = %e, "cannot read pending messages");
                    return Ok(());
                }
            };
            let full = page.len() == CATCH_UP_PAGE;
            for msg in &page {
                self.append_msg(msg);
            }
            self.flush().await?;
            if !full {
                return Ok(());
            }
        }
    }

    /// Writes out what is still queued (at shutdown).
    async fn drain_queue(&mut self) {
        let frames = match &self.login {
            Some(login) => login.outbox.take(usize::MAX),
            None => VecDeque::new(),
        };
        for frame in &frames {
            // At shutdown no gap is filled: what is not written stays pending.
            if let (Some(_), Some(login)) = (frame.msg_id, self.login.as_ref()) {
                let (conv, seq) = frame.conv_seq;
                if login.delivered.place(conv, seq, self.ctx.trust_order) != Place::Next {
                    continue;
                }
            }
            if !frame.catch_up {
                self.append(frame);
            }
        }
        if self.flush().await.is_ok() {
            self.ack_written().await;
        }
    }

    /// Writes out what is queued, then `kicked` with reason `shutdown`.
    async fn shut_down(&mut self) -> Step {
        self.drain_queue().await;
        self.kicked(kick_reason::SHUTDOWN).await
    }

    async fn kicked(&mut self, reason: &'static str) -> Step {
        let flooded = matches!(reason, kick_reason::RATE_LIMITED | kick_reason::TOO_LARGE);
        self.ctx
            .metrics
            .kicks
            .get_or_create(&crate::metrics::ReasonLabel { reason })
            .inc();
        let user = self.login.as_ref().map(|l| l.user.id);
        if flooded || reason == kick_reason::SLOW_CONSUMER {
            tracing::info!(reason, peer = %self.peer, user, "closing session");
        } else {
            tracing::debug!(reason, "closing session");
        }
        let _ = self
            .write_event(&Event::Kicked {
                reason: reason.to_string(),
                message: self.login.as_ref().and_then(|l| l.outbox.message()),
            })
            .await;
        if flooded {
            Step::CloseLingering
        } else {
            Step::Close
        }
    }

    async fn write_event(&mut self, event: &Event) -> std::io::Result<()> {
        self.dialect.event(&Frame::event(event), &mut self.out);
        self.flush().await
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        // Most writes go straight into the socket's buffer: try that first, and arm the
        // write timeout (a timer) only for the rest, when the client is slow to read.
        let mut written = 0;
        if self.dialect.frame_end().is_none() {
            while written < self.out.len() {
                match self.writer.write(&self.out[written..]).now_or_never() {
                    Some(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                    Some(Ok(n)) => written += n,
                    Some(Err(e)) => return Err(e),
                    None => break, // Would block: nothing was written by this attempt.
                }
            }
        }
        let rest = &self.out[written..];
        let result = if rest.is_empty() {
            Ok(())
        } else {
            let write = async {
                match self.dialect.frame_end() {
                    None => self.writer.write_all(rest).await,
                    Some(end) => write_each(&mut self.writer, rest, end).await,
                }
            };
            // A client that does not read must not hold its session open for ever.
            tokio::time::timeout(self.ctx.config.write_timeout, write)
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
        };
        // A transport that holds writes back (a WebSocket's messages) sends them now; for
        // TCP this is ready at once.
        let result = match result {
            Ok(()) => match self.writer.flush().now_or_never() {
                Some(flushed) => flushed,
                None => tokio::time::timeout(self.ctx.config.write_timeout, self.writer.flush())
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
            },
            Err(e) => Err(e),
        };
        // An idle session keeps no buffer: most sessions are idle most of the time.
        self.out = Vec::new();
        result
    }

    /// Becomes `user`'s session: registers in the hub (kicking an older session). Returns
    /// whether friends should hear that the user came online.
    pub(crate) fn start_login(
        &mut self,
        user: User,
        token_hash: crate::password::TokenHash,
        friends: Vec<UserId>,
    ) -> bool {
        let outbox = Arc::new(Outbox::new(self.ctx.config.outbound_queue));
        let since_ms = crate::ops::auth::now_ms();
        let handle = crate::hub::SessionHandle {
            conn_id: self.conn_id,
            since_ms,
            user: user.clone(),
            outbox: outbox.clone(),
        };
        let replaced = self.ctx.hub.register(handle);
        if let Some(old) = &replaced {
            old.outbox.kick(kick_reason::LOGGED_IN_ELSEWHERE);
        }
        self.ctx.bus.session_started(&user, self.conn_id, since_ms);
        tracing::Span::current().record("user", user.id);
        self.login = Some(Login {
            user,
            token_hash,
            outbox,
            delivered: Delivered::default(),
            typing: None,
            friends,
            friends_changed: false,
        });
        self.needs_sync = true;
        // Friends hear "online" unless this login replaced a session on this node. A login
        // that replaces one on another node announces too: that node may be dead and its
        // users already announced offline by another node, and a repeated "online" is
        // harmless where a missing one is not.
        replaced.is_none()
    }

    /// Leaves the hub; tells friends if this was the user's live session.
    pub(crate) async fn end_login(&mut self) -> Option<Login> {
        let mut login = self.login.take()?;
        self.login_deadline = Instant::now() + self.ctx.config.login_timeout;
        if self.ctx.hub.unregister(login.user.id, self.conn_id) {
            self.ctx.bus.session_ended(login.user.id, self.conn_id);
            let friends = if login.friends_changed {
                match self.ctx.store.friend_ids(login.user.id).await {
                    Ok(friends) => friends,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot announce presence");
                        Vec::new()
                    }
                }
            } else {
                std::mem::take(&mut login.friends)
            };
            ops::friends::announce_presence(&self.ctx, login.user.id, false, &friends);
        }
        Some(login)
    }

    /// Acks every message this session was written with an id up to `id`: moves the
    /// delivered cursor of each of their conversations to the highest seq among them.
    pub(crate) async fn ack(&mut self, id: MsgId) -> Result<(), OpError> {
        let Some(login) = self.login.as_mut() else {
            return Err(OpError::new(ErrorCode::Unauthenticated, "log in first"));
        };
        for (conv, seq) in login.delivered.ack_id(id) {
            self.ctx.store.ack(login.user.id, conv, seq).await?;
        }
        Ok(())
    }

    /// Acks `conv` up to `seq`: its delivered cursor moves there (never past the
    /// conversation's last message), and this session forgets what it wrote of it.
    pub(crate) async fn ack_conv(&mut self, conv: ConvId, seq: Seq) -> Result<(), OpError> {
        let Some(login) = self.login.as_mut() else {
            return Err(OpError::new(ErrorCode::Unauthenticated, "log in first"));
        };
        login.delivered.ack_conv(conv, seq);
        self.ctx.store.ack(login.user.id, conv, seq).await?;
        Ok(())
    }

    async fn end(&mut self) {
        let _ = self.writer.shutdown().await;
        self.end_login().await;
    }
}

/// Writes each object of `out` (each ending in `end`) with its own write.
async fn write_each<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &[u8],
    end: u8,
) -> std::io::Result<()> {
    for object in out.split_inclusive(|b| *b == end) {
        writer.write_all(object).await?;
    }
    Ok(())
}

/// Waits for the session's outbox (a kick, or frames); never completes before login.
async fn next_outgoing(outbox: Option<&Outbox>) -> Outgoing {
    match outbox {
        Some(outbox) => outbox.next(WRITE_BATCH).await,
        None => std::future::pending().await,
    }
}
