//! Command-line flags. The option structs also serialize, so that `--procs` can hand a
//! child process exactly the parent's settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

/// Load generator for chatd: drives a running server over the real protocol and reports
/// a human summary and one line of JSON (the last line of output).
#[derive(Debug, Parser)]
#[command(name = "chat-bench", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// A scenario.
#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
pub enum Command {
    /// Open N connections, log each in, hold them with pings; report how many stayed,
    /// the time to log them in, and the server's RSS per connection.
    Conns(ConnsOpts),
    /// N users in pairs send one-to-one messages at a total rate R; report delivered,
    /// lost, duplicated, throughput and latency. `--sweep` raises R until p99 passes a
    /// bound or a message is lost.
    Chat(ChatOpts),
    /// One group of M members, all online; S senders post at a total rate R; report
    /// deliveries per second and fan-out latency.
    Group(GroupOpts),
    /// Log N users in, drop every connection at once and reconnect them all at once by
    /// token; report the time until all are back and synced.
    Storm(StormOpts),
    /// A child process of `--procs` (internal).
    #[command(hide = true)]
    Child {
        /// The child's settings, as JSON.
        spec: String,
    },
}

impl Command {
    /// The scenario's name.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Conns(_) => "conns",
            Command::Chat(_) => "chat",
            Command::Group(_) => "group",
            Command::Storm(_) => "storm",
            Command::Child { .. } => "child",
        }
    }

    /// The settings shared by every scenario.
    pub fn common(&self) -> Option<&Common> {
        match self {
            Command::Conns(o) => Some(&o.common),
            Command::Chat(o) => Some(&o.common),
            Command::Group(o) => Some(&o.common),
            Command::Storm(o) => Some(&o.common),
            Command::Child { .. } => None,
        }
    }
}

/// Settings of every scenario.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct Common {
    /// Server address(es), on 127.0.0.0/8; repeat or separate with commas to spread
    /// connections over several ports.
    #[arg(long = "addr", value_delimiter = ',', default_value = "127.0.0.1:6000")]
    pub addrs: Vec<SocketAddr>,
    /// Spread the users over this many processes (each with its own share).
    #[arg(long, default_value_t = 1)]
    pub procs: u32,
    /// User names are `bench-<prefix>-<i>` (default: the scenario's name).
    #[arg(long)]
    pub prefix: Option<String>,
    /// The token cache file (default: in the temp dir, keyed by server and prefix).
    #[arg(long)]
    pub token_cache: Option<PathBuf>,
    /// Keep no tokens: log in by password every time.
    #[arg(long)]
    pub no_token_cache: bool,
    /// The server's pid: its RSS (from /proc) is read before connecting and once all
    /// users are logged in.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Connect with TLS; the server's certificate must name the IP of its `--addr`.
    #[arg(long)]
    pub tls: bool,
    /// With --tls: trust this CA certificate (PEM), e.g. a self-signed server's, instead
    /// of the system's CAs.
    #[arg(long, value_name = "PEM", requires = "tls")]
    pub ca: Option<PathBuf>,
    /// How many loopback source addresses (127.0.0.2, 127.0.0.3, ...) to spread
    /// connections over; 0 lets the kernel choose (one address: ~28,000 ports).
    #[arg(long, default_value_t = 16)]
    pub sources: u32,
    /// How many users connect and log in at the same time during setup.
    #[arg(long, default_value_t = 256)]
    pub login_concurrency: usize,
    /// Seconds one user's setup (connect, register, login, sync) may take.
    #[arg(long, default_value_t = 120.0)]
    pub setup_timeout: f64,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

impl Common {
    /// The user name prefix.
    pub fn prefix_or<'a>(&'a self, scenario: &'a str) -> &'a str {
        self.prefix.as_deref().unwrap_or(scenario)
    }
}

/// `conns`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct ConnsOpts {
    #[command(flatten)]
    pub common: Common,
    /// Connections (one user each).
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub users: u64,
    /// Seconds to hold them once all are logged in.
    #[arg(long, default_value_t = 60.0)]
    pub hold: f64,
    /// Seconds between pings on each connection.
    #[arg(long, default_value_t = 30.0)]
    pub ping_secs: f64,
}

/// Message traffic settings of `chat` and `group`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct TrafficOpts {
    /// Messages per second, all senders together (the start rate of `--sweep`).
    #[arg(short = 'r', long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(short = 't', long, default_value_t = 10.0)]
    pub duration: f64,
    /// Pad message texts to this many bytes (the stamp alone is about 40).
    #[arg(long, default_value_t = 0)]
    pub size: usize,
    /// Seconds to wait after sending for every confirmed message to arrive.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Sends one connection may have waiting for their reply; past it, due messages wait.
    #[arg(long, default_value_t = 1000)]
    pub max_inflight: u64,
    /// Milliseconds between acks of what a connection received. The protocol asks clients
    /// to ack periodically ("every few seconds while messages arrive"); before 2026-11-21's
    /// third session the default was 100 ms, an ack for nearly every message.
    #[arg(long, default_value_t = 1000)]
    pub ack_ms: u64,
}

/// `chat`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct ChatOpts {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub traffic: TrafficOpts,
    /// Users, in pairs (an even number).
    #[arg(short = 'n', long, default_value_t = 200)]
    pub users: u64,
    /// Raise the rate step by step until p99 passes the bound or a message is lost.
    #[arg(long)]
    pub sweep: bool,
    /// Rate factor from one sweep step to the next.
    #[arg(long, default_value_t = 1.5)]
    pub sweep_factor: f64,
    /// The most sweep steps.
    #[arg(long, default_value_t = 12)]
    pub sweep_steps: u32,
    /// The p99 latency bound of `--sweep`, in milliseconds.
    #[arg(long, default_value_t = 50.0)]
    pub p99_bound_ms: f64,
}

/// `group`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct GroupOpts {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub traffic: TrafficOpts,
    /// Members, all online (member 0 creates the group).
    #[arg(short = 'm', long, default_value_t = 100)]
    pub members: u64,
    /// Members that send (the first S).
    #[arg(short = 's', long, default_value_t = 1)]
    pub senders: u64,
}

/// `storm`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct StormOpts {
    #[command(flatten)]
    pub common: Common,
    /// Users.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub users: u64,
    /// Seconds the reconnect may take before the users not back count as failed.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_needs_tls() {
        let parse = |args: &[&str]| Cli::try_parse_from(["chat-bench", "chat"].iter().chain(args));
        assert!(parse(&["--ca", "ca.pem"]).is_err());
        let cli = parse(&["--tls", "--ca", "ca.pem"]).expect("parses");
        let common = cli.command.common().expect("a scenario");
        assert!(common.tls);
        assert_eq!(common.ca.as_deref(), Some(std::path::Path::new("ca.pem")));
        for scenario in ["conns", "group", "storm"] {
            assert!(Cli::try_parse_from(["chat-bench", scenario, "--tls"]).is_ok());
        }
    }
}
