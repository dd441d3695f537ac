//! `chat`: users in pairs (2k, 2k+1), each sending to the other at an equal share of the
//! total rate. Pairs never straddle two processes, so each process checks its receipts
//! exactly against what its senders had confirmed.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::cli::{ChatOpts, TrafficOpts};
use crate::coord::Coord;
use crate::record::{encode_histogram, Record};
use crate::setup::Env;
use crate::tally::Shards;
use crate::traffic::{self, Clock, SenderPlan, Shared, Streams};
use crate::wire;

/// Runs one step of `chat` at `traffic.rate` (this process's share of the users).
pub async fn run(opts: &ChatOpts, traffic: &TrafficOpts, coord: &Coord) -> anyhow::Result<Record> {
    anyhow::ensure!(
        opts.users >= 2 && opts.users.is_multiple_of(2),
        "chat needs an even number of users, at least 2"
    );
    anyhow::ensure!(traffic.rate > 0.0, "--rate must be positive");
    let range = coord.part.pair_range(opts.users);
    crate::sys::ensure_fds(range.end - range.start, opts.common.procs)?;
    let env = Env::new(&opts.common, "chat")?;
    coord.start();
    let _progress = coord.progress("chat");
    let setup = env.log_in_all(range.clone(), coord, None).await;
    let ids: Vec<Option<i64>> = setup
        .sessions
        .iter()
        .map(|s| s.as_ref().map(|s| s.id))
        .collect();
    let mut record = Record {
        rate: Some(traffic.rate),
        duration_secs: traffic.duration,
        ..setup.record("chat", range.end - range.start)
    };
    coord.phase("online", 0).await?;
    record.set_rss(coord.rss());

    let shared = Arc::new(Shared {
        counters: coord.counters.clone(),
        tally: Shards::new(64),
        stop: CancellationToken::new(),
        inflight: AtomicU64::new(0),
        to_send: AtomicU64::new(0),
        run: coord.run,
        streams: Streams::BySender,
        ack_every: Duration::from_millis(traffic.ack_ms.max(1)),
    });
    // Every user of the whole run sends: each at rate / users.
    let period_ns = opts.users as f64 / traffic.rate * 1e9;
    let duration = Duration::from_secs_f64(traffic.duration.max(0.0));
    let clock = Clock {
        start: Instant::now() + Duration::from_millis(20),
        start_ns: wire::now_ns() + 20_000_000,
    };
    let mut tasks = Vec::new();
    for (local, session) in setup.sessions.into_iter().enumerate() {
        let Some(session) = session else { continue };
        let global = range.start + local as u64;
        // A user whose partner is missing only receives (nothing, then).
        let plan = ids[local ^ 1].map(|partner| {
            let prefix = wire::send_prefix(partner);
            SenderPlan::spread(prefix, global, opts.users, period_ns, duration, traffic)
        });
        tasks.push(traffic::spawn(
            session,
            local as u64,
            plan,
            clock,
            shared.clone(),
        ));
    }
    let drain = Duration::from_secs_f64(traffic.drain.max(0.0));
    // Pairs are local: this process expects exactly what its own senders got confirmed.
    let local_sent = &shared.counters.sent;
    let expected_local = move |_total: u64| local_sent.load(std::sync::atomic::Ordering::Relaxed);
    let (outcome, expected) = traffic::finish(
        tasks,
        clock,
        duration,
        drain,
        &shared,
        coord,
        expected_local,
    )
    .await?;

    let tally = shared.tally.merged();
    for conn in &outcome.conns {
        for (k, v) in &conn.errors {
            *record.errors.entry(k.clone()).or_default() += v;
        }
        record.unsent += conn.unsent;
        record.dropped += u64::from(conn.dropped);
        if let Some((sender, sent)) = &conn.sent {
            record.sent += sent.len();
            record.unconfirmed += tally.compare(*sender as usize, sent).unconfirmed;
        }
    }
    debug_assert_eq!(expected, record.sent);
    record.expected = record.sent;
    record.delivered = tally.delivered;
    record.duplicated = tally.duplicates;
    record.stray += tally.stray;
    record.active_secs = outcome.active_secs;
    record.finish_counts(Some(&tally.latency));
    if coord.is_child() {
        record.hist = Some(encode_histogram(&tally.latency));
    }
    record.ok = record.clean();
    Ok(record)
}
