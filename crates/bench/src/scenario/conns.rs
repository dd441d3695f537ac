//! `conns`: log N users in, hold every connection for a while with pings, and count the
//! ones that stayed. A connection that is kicked, closed, or whose ping fails, dropped.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::cli::ConnsOpts;
use crate::coord::Coord;
use crate::record::Record;
use crate::setup::Env;
use crate::users::Session;
use crate::wire::{self, Frame, CONTROL_RID};

/// Holds one connection until `stop`, pinging every `every` from `first`. Returns
/// whether it stayed, and failed requests by `op:code`.
async fn hold(
    mut session: Session,
    first: Instant,
    every: Duration,
    stop: CancellationToken,
) -> (bool, BTreeMap<String, u64>) {
    let io = &mut session.conn;
    let mut errors = BTreeMap::new();
    let timer = tokio::time::sleep_until(first.into());
    tokio::pin!(timer);
    let mut rid = CONTROL_RID;
    let stayed = loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break true,
            read = io.pump() => {
                if !matches!(read, Ok(true)) {
                    break false;
                }
                let mut open = true;
                while let Ok(Some(line)) = io.decode() {
                    let Some(frame) = Frame::parse(&line) else { continue };
                    if frame.event.as_deref() == Some("kicked") {
                        open = false;
                    } else if frame.event.is_none() && frame.ok == Some(false) {
                        *errors.entry(format!("ping:{}", frame.error_code())).or_insert(0) += 1;
                    }
                }
                if !open {
                    break false;
                }
            }
            () = &mut timer => {
                rid += 1;
                wire::push_ping(&mut io.wbuf, rid);
                if io.flush().is_err() {
                    break false;
                }
                timer.as_mut().reset((Instant::now() + every).into());
            }
        }
    };
    (stayed, errors)
}

/// Runs `conns` (this process's share of the users).
pub async fn run(opts: &ConnsOpts, coord: &Coord) -> anyhow::Result<Record> {
    let range = coord.part.range(opts.users);
    let n = range.end - range.start;
    crate::sys::ensure_fds(n, opts.common.procs)?;
    let env = Env::new(&opts.common, "conns")?;
    coord.start();
    let _progress = coord.progress("conns");
    let setup = env.log_in_all(range.clone(), coord, None).await;
    let mut record = Record {
        duration_secs: opts.hold,
        ..setup.record("conns", n)
    };
    coord.phase("online", 0).await?;
    record.set_rss(coord.rss());

    let start = Instant::now();
    let every = Duration::from_secs_f64(opts.ping_secs.max(0.1));
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for (local, session) in setup.sessions.into_iter().enumerate() {
        let Some(session) = session else { continue };
        // Spread the pings evenly over one period.
        let first = start + every.mul_f64(local as f64 / n.max(1) as f64);
        tasks.push(tokio::spawn(hold(session, first, every, stop.clone())));
    }
    let deadline = start + Duration::from_secs_f64(opts.hold.max(0.0));
    tokio::time::sleep_until(deadline.into()).await;
    stop.cancel();
    let mut held = 0;
    for task in tasks {
        if let Ok((stayed, errors)) = task.await {
            held += u64::from(stayed);
            for (k, v) in errors {
                *record.errors.entry(k).or_default() += v;
            }
        }
    }
    record.held = Some(held);
    record.dropped = record.logged_in - held;
    coord
        .counters
        .dropped
        .fetch_add(record.dropped, std::sync::atomic::Ordering::Relaxed);
    record.ok = record.clean();
    Ok(record)
}
