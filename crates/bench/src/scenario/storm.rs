//! `storm`: log N users in, drop every connection at once, reconnect them all at once by
//! token, and time how long until every one is back and synced.

use std::time::{Duration, Instant};

use crate::cli::StormOpts;
use crate::conn::{Conn, Endpoints};
use crate::coord::{Coord, Counters};
use crate::record::{encode_histogram, Record};
use crate::setup::Env;
use crate::tally::new_histogram;
use crate::users::{self, SetupError};

/// Reconnects user `i` with `token`, retrying connection failures until `deadline`.
/// Returns when it was back and synced.
async fn come_back(
    ends: Endpoints,
    i: u64,
    token: String,
    deadline: Instant,
) -> Result<(Conn, Instant), SetupError> {
    loop {
        let attempt = async {
            let conn = ends.connect(i).await?;
            users::resume(conn, &token).await
        };
        match tokio::time::timeout_at(deadline.into(), attempt).await {
            Ok(Ok(session)) => return Ok((session.conn, Instant::now())),
            Ok(Err(e @ SetupError::Server { .. })) => return Err(e),
            Ok(Err(_)) => {
                if Instant::now() >= deadline {
                    return Err(SetupError::Timeout);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => return Err(SetupError::Timeout),
        }
    }
}

/// Runs `storm` (this process's share of the users).
pub async fn run(opts: &StormOpts, coord: &Coord) -> anyhow::Result<Record> {
    let range = coord.part.range(opts.users);
    let n = range.end - range.start;
    crate::sys::ensure_fds(n, opts.common.procs)?;
    let env = Env::new(&opts.common, "storm")?;
    coord.start();
    let _progress = coord.progress("storm");
    let setup = env.log_in_all(range.clone(), coord, None).await;
    let mut record = setup.record("storm", n);
    coord.phase("online", 0).await?;
    record.set_rss(coord.rss());

    // Drop every connection at once.
    let tokens: Vec<(u64, String)> = setup
        .sessions
        .iter()
        .enumerate()
        .filter_map(|(local, s)| {
            s.as_ref()
                .map(|s| (range.start + local as u64, s.token.clone()))
        })
        .collect();
    drop(setup.sessions);
    coord.phase("dropped", 0).await?;

    // And bring them all back at once.
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(opts.timeout.max(0.1));
    let mut tasks = Vec::with_capacity(tokens.len());
    for (i, token) in tokens {
        let ends = env.ends.clone();
        let counters = coord.counters.clone();
        tasks.push(tokio::spawn(async move {
            let result = come_back(ends, i, token, deadline).await;
            if result.is_ok() {
                Counters::bump(&counters.logged_in);
            }
            result
        }));
    }
    let mut hist = new_histogram();
    let mut back = Vec::with_capacity(tasks.len());
    let mut last = start;
    for task in tasks {
        match task.await {
            Ok(Ok((conn, at))) => {
                hist.saturating_record((at - start).as_micros().max(1) as u64);
                last = last.max(at);
                back.push(conn);
            }
            Ok(Err(e)) => {
                *record
                    .errors
                    .entry(format!("reconnect:{}", e.key()))
                    .or_default() += 1;
            }
            Err(_) => {
                *record.errors.entry("reconnect:panic".into()).or_default() += 1;
            }
        }
    }
    let reconnected = back.len() as u64;
    record.reconnected = Some(reconnected);
    record.dropped = record.logged_in - reconnected;
    record.storm_secs = Some(if record.dropped == 0 {
        (last - start).as_secs_f64()
    } else {
        deadline.saturating_duration_since(start).as_secs_f64()
    });
    record.finish_counts(Some(&hist));
    if coord.is_child() {
        record.hist = Some(encode_histogram(&hist));
    }
    record.ok = record.clean();
    drop(back);
    Ok(record)
}
