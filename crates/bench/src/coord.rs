//! How a scenario talks to whoever runs it: live counters and the progress line, and
//! phases where every process waits for the others.
//!
//! Alone (`Solo`), a phase returns at once and the scenario reads the server's RSS
//! itself. As a child of `--procs`, the scenario prints what it has to say as JSON lines
//! on stdout ([`ChildMsg`]) and waits at each phase for the parent's `go <n>` on stdin;
//! `n` is the sum over all children of the value each one reported.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};

use crate::record::Record;
use crate::sys::rss_bytes;

/// Counters every connection task bumps; read by the progress line.
#[derive(Debug, Default)]
pub struct Counters {
    pub connected: AtomicU64,
    pub logged_in: AtomicU64,
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    pub errors: AtomicU64,
    pub dropped: AtomicU64,
}

impl Counters {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            connected: get(&self.connected),
            logged_in: get(&self.logged_in),
            sent: get(&self.sent),
            delivered: get(&self.delivered),
            errors: get(&self.errors),
            dropped: get(&self.dropped),
        }
    }
}

/// A copy of [`Counters`].
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Snapshot {
    pub connected: u64,
    pub logged_in: u64,
    pub sent: u64,
    pub delivered: u64,
    pub errors: u64,
    pub dropped: u64,
}

impl Snapshot {
    /// Sums snapshots (of several children).
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Snapshot>) -> Snapshot {
        all.into_iter().fold(Snapshot::default(), |a, b| Snapshot {
            connected: a.connected + b.connected,
            logged_in: a.logged_in + b.logged_in,
            sent: a.sent + b.sent,
            delivered: a.delivered + b.delivered,
            errors: a.errors + b.errors,
            dropped: a.dropped + b.dropped,
        })
    }

    /// The progress line: totals, and rates since `prev`.
    pub fn line(&self, scenario: &str, elapsed: Duration, prev: &Snapshot, secs: f64) -> String {
        let per_s = |now: u64, then: u64| (now.saturating_sub(then)) as f64 / secs.max(1e-3);
        format!(
            "[{scenario} {:>5.1}s] conns {} logged in {} | sent {} ({:.0}/s) delivered {} ({:.0}/s) | errors {} dropped {}",
            elapsed.as_secs_f64(),
            self.connected,
            self.logged_in,
            self.sent,
            per_s(self.sent, prev.sent),
            self.delivered,
            per_s(self.delivered, prev.delivered),
            self.errors,
            self.dropped
        )
    }
}

/// A child's line on stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildMsg {
    Progress(Snapshot),
    /// The child reached a phase and waits; `value` is summed over the children.
    Phase {
        name: String,
        value: u64,
    },
    Record(Box<Record>),
}

impl ChildMsg {
    /// Prints the message as one line on stdout.
    pub fn print(&self) {
        use std::io::Write;
        let line = serde_json::to_string(self).unwrap_or_default();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// Which share of the users a process has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub index: u32,
    pub count: u32,
}

impl Part {
    /// The whole.
    pub const ALL: Part = Part { index: 0, count: 1 };

    /// This part's share of `0..n`.
    pub fn range(&self, n: u64) -> Range<u64> {
        let count = u64::from(self.count.max(1));
        let index = u64::from(self.index);
        (n * index / count)..(n * (index + 1) / count)
    }

    /// This part's share of `0..n` in whole pairs (`n` even).
    pub fn pair_range(&self, n: u64) -> Range<u64> {
        let pairs = self.range(n / 2);
        (pairs.start * 2)..(pairs.end * 2)
    }
}

enum Mode {
    Solo,
    Child(tokio::sync::Mutex<Lines<BufReader<Stdin>>>),
}

/// The scenario's link to its runner. See the module docs.
pub struct Coord {
    mode: Mode,
    pub part: Part,
    /// Identifies this run in message texts.
    pub run: u32,
    /// The group of `group`, set up before the scenario runs.
    pub group: Option<i64>,
    pub counters: Arc<Counters>,
    progress: bool,
    server_pid: Option<u32>,
    rss: Mutex<(Option<u64>, Option<u64>)>,
}

/// A run id from the clock and the pid.
pub fn new_run_id() -> u32 {
    let ns = crate::wire::now_ns();
    ((ns >> 20) as u32) ^ (ns as u32) ^ std::process::id().rotate_left(16)
}

impl Coord {
    /// A coordinator for a process running the whole scenario alone.
    pub fn solo(progress: bool, server_pid: Option<u32>) -> Coord {
        Coord {
            mode: Mode::Solo,
            part: Part::ALL,
            run: new_run_id(),
            group: None,
            counters: Arc::default(),
            progress,
            server_pid,
            rss: Mutex::new((None, None)),
        }
    }

    /// A coordinator for a child process of `--procs`.
    pub fn child(part: Part, run: u32, group: Option<i64>) -> Coord {
        Coord {
            mode: Mode::Child(tokio::sync::Mutex::new(
                BufReader::new(tokio::io::stdin()).lines(),
            )),
            part,
            run,
            group,
            counters: Arc::default(),
            progress: true,
            server_pid: None,
            rss: Mutex::new((None, None)),
        }
    }

    /// Whether this process is a child of `--procs`.
    pub fn is_child(&self) -> bool {
        matches!(self.mode, Mode::Child(_))
    }

    /// Reads the server's RSS (alone only; the parent does it for children).
    fn read_rss(&self, after: bool) {
        if let Some(pid) = self.server_pid {
            let mut rss = self.rss.lock().unwrap_or_else(|e| e.into_inner());
            if after {
                rss.1 = rss_bytes(pid);
            } else {
                rss.0 = rss_bytes(pid);
            }
        }
    }

    /// The RSS readings so far: (before connecting, all logged in).
    pub fn rss(&self) -> (Option<u64>, Option<u64>) {
        *self.rss.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the start (before connecting): reads the server's RSS when alone.
    pub fn start(&self) {
        if !self.is_child() {
            self.read_rss(false);
        }
    }

    /// Waits until every process reached phase `name`; returns the sum of `value` over
    /// them. The `online` phase (every user logged in) reads the server's RSS.
    pub async fn phase(&self, name: &str, value: u64) -> anyhow::Result<u64> {
        match &self.mode {
            Mode::Solo => {
                if name == "online" {
                    self.read_rss(true);
                }
                Ok(value)
            }
            Mode::Child(stdin) => {
                ChildMsg::Phase {
                    name: name.to_string(),
                    value,
                }
                .print();
                let mut lines = stdin.lock().await;
                let line = lines
                    .next_line()
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("the parent went away at phase {name}"))?;
                let sum = line
                    .strip_prefix("go ")
                    .and_then(|n| n.trim().parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("unexpected line from the parent: {line}"))?;
                Ok(sum)
            }
        }
    }

    /// Starts the progress line (once a second, to stderr; children send their counters
    /// to the parent instead). It stops when the returned guard is dropped.
    pub fn progress(&self, scenario: &'static str) -> ProgressGuard {
        if !self.progress {
            return ProgressGuard(None);
        }
        let counters = self.counters.clone();
        let child = self.is_child();
        let handle = tokio::spawn(async move {
            let start = Instant::now();
            let mut prev = Snapshot::default();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let now = counters.snapshot();
                if child {
                    ChildMsg::Progress(now).print();
                } else {
                    eprintln!("{}", now.line(scenario, start.elapsed(), &prev, 1.0));
                }
                prev = now;
            }
        });
        ProgressGuard(Some(handle))
    }
}

/// Stops the progress line when dropped.
pub struct ProgressGuard(Option<tokio::task::JoinHandle<()>>);

impl Drop for ProgressGuard {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_everything_once() {
        let n = 1001;
        let mut next = 0;
        for index in 0..3 {
            let r = Part { index, count: 3 }.range(n);
            assert_eq!(r.start, next);
            next = r.end;
        }
        assert_eq!(next, n);
        let mut next = 0;
        for index in 0..3 {
            let r = Part { index, count: 3 }.pair_range(10);
            assert_eq!((r.start % 2, r.start), (0, next));
            next = r.end;
        }
        assert_eq!(next, 10);
    }
}
