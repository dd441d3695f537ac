//! Message traffic of `chat` and `group`: one task per connection sends on a fixed
//! schedule and receives, checks and times what arrives; then a drain waits for every
//! confirmed message.
//!
//! A sender's message `k` is due at `start + offset + k * period`; at each wake-up the
//! task sends every message already due (so the schedule holds at rates above the timer
//! resolution) and stamps each with its due time, so a server that falls behind shows
//! as latency rather than as a slower schedule. A send counts as sent once the server
//! replies `ok`; its rid is its sequence number, so the reply says which one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use crate::bits::Bits;
use crate::cli::TrafficOpts;
use crate::coord::{Coord, Counters};
use crate::tally::{Receipt, Shards};
use crate::users::Session;
use crate::wire::{self, Frame, Stamp, CONTROL_RID};

/// The highest sender number a stamp may carry for [`Streams::BySender`].
const MAX_SENDER: u64 = 1 << 24;

/// How received messages map to tally streams.
#[derive(Debug, Clone, Copy)]
pub enum Streams {
    /// One stream per sender (each receiver hears one sender: `chat`).
    BySender,
    /// One stream per receiver and sender (`group`, `senders` senders numbered from 0).
    ByPair { senders: u64 },
}

/// State shared by the connection tasks of a run.
pub struct Shared {
    pub counters: Arc<Counters>,
    pub tally: Shards,
    pub stop: CancellationToken,
    /// Sends waiting for their reply, all connections together.
    pub inflight: AtomicU64,
    /// Messages of the schedule not sent yet, all connections together (see [`spawn`]).
    pub to_send: AtomicU64,
    pub run: u32,
    pub streams: Streams,
    pub ack_every: Duration,
}

/// What one connection sends.
#[derive(Debug, Clone)]
pub struct SenderPlan {
    /// The request up to the rid (see [`wire::send_prefix`]).
    pub prefix: Vec<u8>,
    /// The sender number stamped into its texts.
    pub sender: u64,
    pub offset: Duration,
    pub period_ns: f64,
    /// Messages to send.
    pub total: u64,
    pub size: usize,
    pub max_inflight: u64,
}

impl SenderPlan {
    /// Sender `sender` of `senders`, sending `prefix` requests every `period_ns` for
    /// `duration`: the senders' first sends are spread evenly over one period.
    pub fn spread(
        prefix: Vec<u8>,
        sender: u64,
        senders: u64,
        period_ns: f64,
        duration: Duration,
        traffic: &TrafficOpts,
    ) -> SenderPlan {
        let offset =
            Duration::from_nanos((period_ns * sender as f64 / senders.max(1) as f64) as u64);
        SenderPlan {
            prefix,
            sender,
            offset,
            period_ns,
            total: messages_in(duration, offset, period_ns),
            size: traffic.size,
            max_inflight: traffic.max_inflight.max(1),
        }
    }
}

/// When the traffic started, in both clocks.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub start: Instant,
    pub start_ns: u64,
}

/// What one connection did.
#[derive(Debug, Default)]
pub struct ConnOutcome {
    /// The sender number and the sequence numbers the server confirmed.
    pub sent: Option<(u64, Bits)>,
    /// Failed requests, by `op:code`.
    pub errors: BTreeMap<String, u64>,
    /// Messages due that were never sent.
    pub unsent: u64,
    /// The connection was kicked or closed.
    pub dropped: bool,
}

/// How many messages of a sender with this offset and period fall before `duration`.
pub fn messages_in(duration: Duration, offset: Duration, period_ns: f64) -> u64 {
    let span = duration.as_nanos() as f64 - offset.as_nanos() as f64;
    if span <= 0.0 || period_ns <= 0.0 {
        0
    } else {
        (span / period_ns).ceil() as u64
    }
}

struct Conn<'a> {
    shared: &'a Shared,
    receiver: u64,
    max_id: i64,
    acked: i64,
    out: ConnOutcome,
    sent: Bits,
    inflight: u64,
}

impl Conn<'_> {
    fn count_error(&mut self, op: &str, code: &str) {
        *self.out.errors.entry(format!("{op}:{code}")).or_default() += 1;
        Counters::bump(&self.shared.counters.errors);
    }

    /// Handles one frame; `false` when the connection is over (kicked).
    fn handle(&mut self, line: &[u8]) -> bool {
        let Some(frame) = Frame::parse(line) else {
            self.count_error("read", "unparsable_frame");
            return true;
        };
        match frame.event.as_deref() {
            Some("msg") => {
                self.max_id = self.max_id.max(frame.id.unwrap_or(0));
                self.receive(frame.text.as_deref().unwrap_or(""));
                true
            }
            Some("kicked") => false,
            Some(_) => true,
            None => {
                let Some(rid) = frame.rid else {
                    self.count_error("unknown", frame.error_code());
                    return true;
                };
                let ok = frame.ok == Some(true);
                if rid >= CONTROL_RID {
                    if !ok {
                        self.count_error("ack", frame.error_code());
                    }
                    return true;
                }
                self.inflight = self.inflight.saturating_sub(1);
                self.shared.inflight.fetch_sub(1, Ordering::Relaxed);
                if ok {
                    self.sent.insert(rid);
                    Counters::bump(&self.shared.counters.sent);
                } else {
                    self.count_error("send", frame.error_code());
                }
                true
            }
        }
    }

    fn receive(&mut self, text: &str) {
        let now = wire::now_ns();
        let shared = self.shared;
        let stamp = Stamp::parse(text).filter(|s| s.run == shared.run);
        let stream = stamp.and_then(|s| match shared.streams {
            Streams::BySender => (s.sender < MAX_SENDER).then_some(s.sender),
            Streams::ByPair { senders } => {
                (s.sender < senders).then(|| self.receiver * senders + s.sender)
            }
        });
        let receipt = shared
            .tally
            .with(self.receiver as usize, |tally| match (stamp, stream) {
                (Some(s), Some(stream)) => {
                    Some(tally.record(stream as usize, s.seq, now.saturating_sub(s.due_ns)))
                }
                _ => {
                    tally.record_stray();
                    None
                }
            });
        if receipt == Some(Receipt::Fresh) {
            Counters::bump(&shared.counters.delivered);
        }
    }
}

/// Starts [`drive`] on a task of its own, counting its messages into `shared.to_send`
/// first, so that [`finish`] waits for them.
pub fn spawn(
    session: Session,
    receiver: u64,
    plan: Option<SenderPlan>,
    clock: Clock,
    shared: Arc<Shared>,
) -> tokio::task::JoinHandle<ConnOutcome> {
    if let Some(p) = &plan {
        shared.to_send.fetch_add(p.total, Ordering::Relaxed);
    }
    tokio::spawn(drive(session, receiver, plan, clock, shared))
}

/// Runs one connection until `shared.stop`: sends per `plan` (if any), receives and
/// acks. `receiver` is the connection's local index (its tally shard and stream base).
pub async fn drive(
    mut session: Session,
    receiver: u64,
    plan: Option<SenderPlan>,
    clock: Clock,
    shared: Arc<Shared>,
) -> ConnOutcome {
    let mut c = Conn {
        shared: &shared,
        receiver,
        max_id: session.max_msg_id,
        acked: 0,
        out: ConnOutcome::default(),
        sent: Bits::new(),
        inflight: 0,
    };
    let io = &mut session.conn;
    let far = clock.start + Duration::from_secs(86_400 * 365);
    let (total, period_ns) = plan.as_ref().map_or((0, 1.0), |p| (p.total, p.period_ns));
    let offset = plan.as_ref().map_or(Duration::ZERO, |p| p.offset);
    let due_at = |k: u64| offset + Duration::from_nanos((k as f64 * period_ns) as u64);
    let mut next: u64 = 0;
    let send_timer = sleep_until(
        if total > 0 {
            clock.start + due_at(0)
        } else {
            far
        }
        .into(),
    );
    tokio::pin!(send_timer);
    let ack_timer = sleep_until(if c.max_id > 0 {
        Instant::now().into()
    } else {
        far.into()
    });
    tokio::pin!(ack_timer);
    let mut ack_armed = c.max_id > 0;
    let mut control_rid = CONTROL_RID;
    let stop = shared.stop.clone();
    loop {
        let can_send = next < total && plan.as_ref().is_some_and(|p| c.inflight < p.max_inflight);
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            // Reads, and writes whatever the timers below left in the write buffer.
            read = io.pump() => {
                if !matches!(read, Ok(true)) {
                    c.out.dropped = true;
                    break;
                }
                let mut open = true;
                loop {
                    match io.decode() {
                        Ok(Some(line)) => open &= c.handle(&line),
                        Ok(None) => break,
                        Err(_) => { open = false; break; }
                    }
                }
                if !open {
                    c.out.dropped = true;
                    break;
                }
                if !ack_armed && c.max_id > c.acked {
                    ack_armed = true;
                    ack_timer.as_mut().reset((Instant::now() + shared.ack_every).into());
                }
            }
            () = &mut send_timer, if can_send => {
                let Some(p) = plan.as_ref() else { break };
                let elapsed = clock.start.elapsed();
                while next < total && c.inflight < p.max_inflight && due_at(next) <= elapsed {
                    let due = due_at(next);
                    let stamp = Stamp {
                        run: shared.run,
                        sender: p.sender,
                        seq: next,
                        due_ns: clock.start_ns + due.as_nanos() as u64,
                    };
                    wire::push_message(&mut io.wbuf, &p.prefix, &stamp, p.size);
                    c.inflight += 1;
                    shared.inflight.fetch_add(1, Ordering::Relaxed);
                    shared.to_send.fetch_sub(1, Ordering::Relaxed);
                    next += 1;
                }
                let wake = if next < total { clock.start + due_at(next) } else { far };
                send_timer.as_mut().reset(wake.into());
                if io.flush().is_err() {
                    c.out.dropped = true;
                    break;
                }
            }
            () = &mut ack_timer, if ack_armed => {
                ack_armed = false;
                ack_timer.as_mut().reset(far.into());
                if c.max_id > c.acked {
                    control_rid += 1;
                    wire::push_ack(&mut io.wbuf, control_rid, c.max_id);
                    c.acked = c.max_id;
                    if io.flush().is_err() {
                        c.out.dropped = true;
                        break;
                    }
                }
            }
        }
    }
    // Sends whose reply never came are not counted as sent; they stop being in flight.
    shared.inflight.fetch_sub(c.inflight, Ordering::Relaxed);
    shared.to_send.fetch_sub(total - next, Ordering::Relaxed);
    if c.out.dropped {
        Counters::bump(&shared.counters.dropped);
    } else if c.max_id > 0 {
        // A last ack, so that nothing stays pending for the next run; its reply is
        // awaited, so that the server has taken it (and, replies coming in order, every
        // ack before it) before the connection closes. Sent even when the last periodic
        // ack covered everything: that one's reply may not have come yet, and closing a
        // socket with unread data resets it, which can lose the ack on the server's side.
        let rid = control_rid + 1;
        let mut frame = Vec::new();
        wire::push_ack(&mut frame, rid, c.max_id);
        let last_ack = async {
            io.write_now(&frame).await?;
            while let Some(line) = io.next_line().await? {
                if Frame::parse(&line).is_some_and(|f| f.event.is_none() && f.rid == Some(rid)) {
                    break;
                }
            }
            Ok::<(), std::io::Error>(())
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), last_ack).await;
    }
    c.out.unsent = total - next;
    if let Some(p) = &plan {
        c.out.sent = Some((p.sender, std::mem::take(&mut c.sent)));
    }
    c.out
}

/// What a whole run of traffic did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub conns: Vec<ConnOutcome>,
    /// Seconds from the start of traffic to the last delivery seen (or the drain's end).
    pub active_secs: f64,
}

/// Waits until the send phase is over, every message of the schedule has been sent (the
/// last ones may be due a timer tick before the end) and no send is in flight, tells the other processes
/// how many messages this one got confirmed (`phase("sent")`), turns the sum into the
/// number of deliveries this process expects with `expect`, waits (at most `drain`) until
/// they have arrived, then stops every connection.
pub async fn finish(
    tasks: Vec<tokio::task::JoinHandle<ConnOutcome>>,
    clock: Clock,
    duration: Duration,
    drain: Duration,
    shared: &Shared,
    coord: &Coord,
    expect: impl FnOnce(u64) -> u64,
) -> anyhow::Result<(Outcome, u64)> {
    let end = clock.start + duration;
    tokio::time::sleep_until(end.into()).await;
    let deadline = end + drain;
    let counters = &shared.counters;
    let mut last_delivered = counters.delivered.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    let watch = |last_delivered: &mut u64, last_change: &mut Instant| {
        let now = counters.delivered.load(Ordering::Relaxed);
        if now != *last_delivered {
            *last_delivered = now;
            *last_change = Instant::now();
        }
    };
    let busy = || {
        shared.inflight.load(Ordering::Relaxed) > 0 || shared.to_send.load(Ordering::Relaxed) > 0
    };
    while busy() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        watch(&mut last_delivered, &mut last_change);
    }
    let local_sent = counters.sent.load(Ordering::Relaxed);
    let total_sent = coord.phase("sent", local_sent).await?;
    let expected = expect(total_sent);
    let deadline = Instant::now().max(deadline);
    loop {
        watch(&mut last_delivered, &mut last_change);
        if last_delivered >= expected || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shared.stop.cancel();
    let mut outcome = Outcome {
        active_secs: last_change
            .saturating_duration_since(clock.start)
            .as_secs_f64(),
        ..Outcome::default()
    };
    for task in tasks {
        match task.await {
            Ok(conn) => outcome.conns.push(conn),
            Err(_) => outcome.conns.push(ConnOutcome {
                dropped: true,
                ..ConnOutcome::default()
            }),
        }
    }
    Ok((outcome, expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_messages_of_a_schedule() {
        let second = Duration::from_secs(1);
        // 10/s for 1 s: due at 0, 100, ..., 900 ms.
        assert_eq!(messages_in(second, Duration::ZERO, 1e8), 10);
        // Offset by 50 ms: 50, 150, ..., 950 ms.
        assert_eq!(messages_in(second, Duration::from_millis(50), 1e8), 10);
        assert_eq!(messages_in(second, second, 1e8), 0);
        assert_eq!(messages_in(second, Duration::ZERO, 3e8), 4);
    }
}
