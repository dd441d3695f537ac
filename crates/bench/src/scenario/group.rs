//! `group`: one group of M members (member 0 created it), all online; the first S
//! members post at an equal share of the total rate, and every other member receives each
//! post. Receivers may live in other processes than senders, so the expected number of
//! deliveries is computed from the total confirmed over all processes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::cli::GroupOpts;
use crate::coord::{Coord, Counters};
use crate::record::{encode_histogram, Record};
use crate::setup::Env;
use crate::tally::Shards;
use crate::traffic::{self, Clock, SenderPlan, Shared, Streams};
use crate::users::{self, LoginCounts};
use crate::wire;

/// The group's name for a user prefix.
fn group_name(prefix: &str) -> String {
    format!("bench-{prefix}")
}

/// Makes sure the group exists, created by member 0; reuses the one in the token cache
/// when member 0 is still in it. Returns its id.
pub async fn prepare(opts: &GroupOpts) -> anyhow::Result<i64> {
    let env = Env::new(&opts.common, "group")?;
    let counts = LoginCounts::default();
    let counters = Counters::default();
    let mut creator = env
        .log_in_one(0, &counts, &counters, None)
        .await
        .map_err(|e| anyhow::anyhow!("logging in the group's creator: {e}"))?;
    let name = group_name(&env.prefix);
    let id = match env.cache.group(&name) {
        Some(id) if creator.groups.contains(&id) => id,
        _ => {
            let id = users::create_group(&mut creator.conn, &name)
                .await
                .map_err(|e| anyhow::anyhow!("creating the group: {e}"))?;
            env.cache.add_group(&name, id);
            id
        }
    };
    env.cache.flush()?;
    Ok(id)
}

/// Runs `group` (this process's share of the members) on group `coord.group`.
pub async fn run(opts: &GroupOpts, coord: &Coord) -> anyhow::Result<Record> {
    anyhow::ensure!(opts.members >= 2, "a group needs at least 2 members");
    anyhow::ensure!(
        (1..=opts.members).contains(&opts.senders),
        "--senders must be 1 to --members"
    );
    let traffic = &opts.traffic;
    anyhow::ensure!(traffic.rate > 0.0, "--rate must be positive");
    let group = match coord.group {
        Some(group) => group,
        None => prepare(opts).await?,
    };
    let range = coord.part.range(opts.members);
    crate::sys::ensure_fds(range.end - range.start, opts.common.procs)?;
    let env = Env::new(&opts.common, "group")?;
    coord.start();
    let _progress = coord.progress("group");
    let setup = env.log_in_all(range.clone(), coord, Some(group)).await;
    let local_senders = (range.start..range.end.min(opts.senders)).count() as u64;
    let mut record = Record {
        rate: Some(traffic.rate),
        duration_secs: traffic.duration,
        group: Some(group),
        members: Some(range.end - range.start),
        senders: Some(local_senders),
        ..setup.record("group", range.end - range.start)
    };
    let online_here = setup.logged_in();
    coord.phase("online", 0).await?;
    record.set_rss(coord.rss());

    let shared = Arc::new(Shared {
        counters: coord.counters.clone(),
        tally: Shards::new(64),
        stop: CancellationToken::new(),
        inflight: AtomicU64::new(0),
        to_send: AtomicU64::new(0),
        run: coord.run,
        streams: Streams::ByPair {
            senders: opts.senders,
        },
        ack_every: Duration::from_millis(traffic.ack_ms.max(1)),
    });
    let period_ns = opts.senders as f64 / traffic.rate * 1e9;
    let duration = Duration::from_secs_f64(traffic.duration.max(0.0));
    let clock = Clock {
        start: Instant::now() + Duration::from_millis(20),
        start_ns: wire::now_ns() + 20_000_000,
    };
    let prefix = wire::group_send_prefix(group);
    let mut tasks = Vec::new();
    for (local, session) in setup.sessions.into_iter().enumerate() {
        let Some(session) = session else { continue };
        let global = range.start + local as u64;
        let plan = (global < opts.senders).then(|| {
            let prefix = prefix.clone();
            SenderPlan::spread(prefix, global, opts.senders, period_ns, duration, traffic)
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
    // Each confirmed post reaches every online member here but its sender.
    let local_sent = &shared.counters.sent;
    let expect =
        move |total: u64| (total * online_here).saturating_sub(local_sent.load(Ordering::Relaxed));
    let (outcome, expected) =
        traffic::finish(tasks, clock, duration, drain, &shared, coord, expect).await?;

    let tally = shared.tally.merged();
    for conn in &outcome.conns {
        for (k, v) in &conn.errors {
            *record.errors.entry(k.clone()).or_default() += v;
        }
        record.unsent += conn.unsent;
        record.dropped += u64::from(conn.dropped);
        if let Some((_, sent)) = &conn.sent {
            record.sent += sent.len();
        }
    }
    record.expected = expected;
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
