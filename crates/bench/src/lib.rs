//! chat-bench: a load generator for chatd that speaks the real protocol.
//!
//! - [`cli`]: flags of every scenario.
//! - [`scenario`]: `conns`, `chat`, `group`, `storm`, one file each; [`run`] picks one and
//!   runs it alone or over `--procs` children ([`procs`]); `chat --sweep` is [`sweep`].
//! - [`setup`] and [`users`]: logging users in (register, password, cached tokens).
//! - [`traffic`]: the per-connection send/receive task of `chat` and `group`.
//! - [`tally`] and [`bits`]: counting receipts: duplicates, losses, latency.
//! - [`conn`] and [`wire`]: a lean connection and the hot-path frames.
//! - [`coord`]: progress counters and phases between processes; [`record`]: the results.
//! - [`sys`]: file-descriptor limit and server RSS.

pub mod bits;
pub mod cli;
pub mod conn;
pub mod coord;
pub mod procs;
pub mod record;
pub mod scenario;
pub mod setup;
pub mod sys;
pub mod tally;
pub mod traffic;
pub mod users;
pub mod wire;

use crate::cli::{ChatOpts, Command};
use crate::coord::{ChildMsg, Coord};
use crate::record::Record;

/// Runs `command` and returns its record: alone, or over `--procs` children. A `child`
/// command runs its share and prints its record for the parent.
pub async fn run(command: &Command) -> anyhow::Result<Record> {
    if let Command::Child { spec } = command {
        let spec: procs::ChildSpec = serde_json::from_str(spec)?;
        let coord = Coord::child(spec.part, spec.run, spec.group);
        let record = run_here(&spec.command, &coord).await?;
        ChildMsg::Record(Box::new(record.clone())).print();
        return Ok(record);
    }
    if let Command::Chat(opts) = command {
        if opts.sweep {
            return sweep(opts).await;
        }
    }
    run_once(command).await
}

/// One run of a scenario (not a sweep), alone or over children.
async fn run_once(command: &Command) -> anyhow::Result<Record> {
    let common = command
        .common()
        .ok_or_else(|| anyhow::anyhow!("no scenario"))?;
    if common.procs > 1 {
        let group = match command {
            Command::Group(opts) => Some(scenario::group::prepare(opts).await?),
            _ => None,
        };
        procs::run_parent(
            command,
            common.procs,
            coord::new_run_id(),
            group,
            common.server_pid,
            common.quiet,
        )
        .await
    } else {
        let coord = Coord::solo(!common.quiet, common.server_pid);
        run_here(command, &coord).await
    }
}

/// Runs this process's share of `command`.
async fn run_here(command: &Command, coord: &Coord) -> anyhow::Result<Record> {
    match command {
        Command::Conns(opts) => scenario::conns::run(opts, coord).await,
        Command::Chat(opts) => scenario::chat::run(opts, &opts.traffic, coord).await,
        Command::Group(opts) => scenario::group::run(opts, coord).await,
        Command::Storm(opts) => scenario::storm::run(opts, coord).await,
        Command::Child { .. } => anyhow::bail!("a child cannot have children"),
    }
}

/// `chat --sweep`: runs `chat` at the start rate, then at `--sweep-factor` times the rate
/// of the step before, until p99 passes the bound, a message is lost or duplicated, or a
/// request fails; the highest rate before that held.
pub async fn sweep(opts: &ChatOpts) -> anyhow::Result<Record> {
    let mut rate = opts.traffic.rate;
    let mut steps = Vec::new();
    let mut held = None;
    for _ in 0..opts.sweep_steps.max(1) {
        let mut step = opts.clone();
        step.sweep = false;
        step.traffic.rate = rate;
        let record = run_once(&Command::Chat(step)).await?;
        let p99 = record.latency_ms.as_ref().map_or(f64::INFINITY, |l| l.p99);
        let ok = record.clean() && p99 <= opts.p99_bound_ms && record.delivered > 0;
        let mut shown = record.clone();
        shown.ok = ok;
        shown.hist = None;
        if !opts.common.quiet {
            eprintln!(
                "sweep: {rate:.0} msg/s {}: p99 {p99:.3} ms, lost {}, dup {}, errors {}",
                if ok { "held" } else { "failed" },
                record.lost,
                record.duplicated,
                record.errors.values().sum::<u64>()
            );
        }
        steps.push(shown);
        if !ok {
            break;
        }
        held = Some(rate);
        rate *= opts.sweep_factor.max(1.01);
    }
    // The summary is the last step that held (else the first), with every step listed.
    let best = held
        .and_then(|r| steps.iter().rev().find(|s| s.rate == Some(r)))
        .or(steps.first())
        .cloned()
        .unwrap_or_default();
    Ok(Record {
        ok: held.is_some(),
        p99_bound_ms: Some(opts.p99_bound_ms),
        held_rate: held,
        steps,
        ..best
    })
}
