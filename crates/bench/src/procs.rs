//! `--procs N`: the parent re-runs its own binary as N children (`chat-bench child
//! <spec>`), each with a share of the users, relays the phases between them (see
//! [`crate::coord`]), prints the summed progress line, and merges their records.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

use crate::cli::Command;
use crate::coord::{ChildMsg, Part, Snapshot};
use crate::record::Record;
use crate::sys::rss_bytes;

/// What a child is told to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildSpec {
    pub command: Command,
    pub part: Part,
    pub run: u32,
    pub group: Option<i64>,
}

enum Event {
    Msg(usize, ChildMsg),
    Gone(usize),
}

/// Runs `command` over `procs` children and merges what they report.
pub async fn run_parent(
    command: &Command,
    procs: u32,
    run: u32,
    group: Option<i64>,
    server_pid: Option<u32>,
    quiet: bool,
) -> anyhow::Result<Record> {
    let exe = std::env::current_exe()?;
    let rss_before = server_pid.and_then(rss_bytes);
    let mut rss_after = None;
    let (tx, mut rx) = mpsc::channel(1024);
    let mut children: Vec<Child> = Vec::new();
    let mut stdins: Vec<ChildStdin> = Vec::new();
    for index in 0..procs {
        let spec = ChildSpec {
            command: command.clone(),
            part: Part {
                index,
                count: procs,
            },
            run,
            group,
        };
        let mut child = tokio::process::Command::new(&exe)
            .arg("child")
            .arg(serde_json::to_string(&spec)?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("child {index} has no stdout"))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("child {index} has no stdin"))?;
        stdins.push(stdin);
        children.push(child);
        let tx = tx.clone();
        let idx = index as usize;
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<ChildMsg>(&line) {
                    Ok(msg) => {
                        if tx.send(Event::Msg(idx, msg)).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => eprintln!("child {idx}: {line}"),
                }
            }
            let _ = tx.send(Event::Gone(idx)).await;
        });
    }
    drop(tx);

    let n = procs as usize;
    let mut progress = vec![Snapshot::default(); n];
    let mut records: Vec<Option<Record>> = vec![None; n];
    let mut phases: HashMap<String, (usize, u64)> = HashMap::new();
    let start = Instant::now();
    let mut prev = Snapshot::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let scenario = command.name();
    while records.iter().any(Option::is_none) {
        tokio::select! {
            event = rx.recv() => match event {
                Some(Event::Msg(i, ChildMsg::Progress(s))) => progress[i] = s,
                Some(Event::Msg(i, ChildMsg::Record(r))) => records[i] = Some(*r),
                Some(Event::Msg(_, ChildMsg::Phase { name, value })) => {
                    let entry = phases.entry(name.clone()).or_default();
                    entry.0 += 1;
                    entry.1 += value;
                    if entry.0 == n {
                        let sum = entry.1;
                        if name == "online" {
                            rss_after = server_pid.and_then(rss_bytes);
                        }
                        for stdin in &mut stdins {
                            stdin.write_all(format!("go {sum}\n").as_bytes()).await?;
                            stdin.flush().await?;
                        }
                    }
                }
                Some(Event::Gone(i)) => {
                    if records[i].is_none() {
                        let status = children[i].wait().await?;
                        anyhow::bail!("child {i} of {scenario} ended without a result ({status})");
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if !quiet {
                    let now = Snapshot::sum(&progress);
                    eprintln!("{}", now.line(scenario, start.elapsed(), &prev, 1.0));
                    prev = now;
                }
            }
        }
    }
    for child in &mut children {
        let _ = child.wait().await;
    }
    let records: Vec<Record> = records.into_iter().flatten().collect();
    let mut merged = Record::merge(&records)?;
    merged.set_rss((rss_before, rss_after));
    Ok(merged)
}
