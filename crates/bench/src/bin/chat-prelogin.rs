//! `chat-prelogin`: what connections that never log in cost a server, and whether it
//! gives the memory back when they go.
//!
//! Opens `--conns` connections (spread over `--sources` loopback addresses), writes an
//! unterminated line of `--bytes` bytes on each (a login that never ends), holds them
//! for `--hold` seconds, closes them all, and waits `--settle` seconds. The server's RSS
//! (`--server-pid`, from /proc) is read before, at its highest while they are held, and
//! after they closed. Loopback only; it stops by itself. Prints one line of JSON.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

#[derive(Debug, Parser)]
#[command(name = "chat-prelogin")]
struct Args {
    /// The server, on 127.0.0.0/8.
    #[arg(long, default_value = "127.0.0.1:6000")]
    addr: SocketAddr,
    /// Connections to open.
    #[arg(short = 'n', long, default_value_t = 5000)]
    conns: usize,
    /// Bytes of the unterminated line written on each.
    #[arg(long, default_value_t = 4000)]
    bytes: usize,
    /// Loopback source addresses to spread over (127.0.0.2, ...); 0: 127.0.0.1.
    #[arg(long, default_value_t = 0)]
    sources: u32,
    /// The server's pid, for its RSS.
    #[arg(long)]
    server_pid: u32,
    /// Seconds to hold the connections once all are written.
    #[arg(long, default_value_t = 3.0)]
    hold: f64,
    /// Seconds to wait after closing them.
    #[arg(long, default_value_t = 5.0)]
    settle: f64,
}

/// The source address of connection `i`.
fn source(i: usize, sources: u32) -> Option<IpAddr> {
    if sources == 0 {
        return None;
    }
    let k = u32::try_from(i).unwrap_or(0) % sources;
    Some(IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(127, 0, 0, 2)) + k,
    )))
}

async fn open(addr: SocketAddr, from: Option<IpAddr>, line: &[u8]) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let mut stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(addr))
        .await
        .context("connect timed out")??;
    stream.write_all(line).await?;
    Ok(stream)
}

fn rss_mib(pid: u32) -> f64 {
    chat_bench::sys::rss_bytes(pid).map_or(f64::NAN, |b| b as f64 / (1024.0 * 1024.0))
}

/// The highest and the last RSS over `secs`, sampled every 100 ms.
async fn watch(pid: u32, secs: f64) -> (f64, f64) {
    let mut high = rss_mib(pid);
    let mut last = high;
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = rss_mib(pid);
        high = high.max(last);
    }
    (high, last)
}

/// Connections the server has not closed (nothing to read and no end of stream).
fn still_open(streams: &[TcpStream]) -> usize {
    let mut buf = [0u8; 256];
    streams
        .iter()
        .filter(|s| {
            matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.addr.ip().is_loopback(),
        "--addr must be a loopback address"
    );
    chat_bench::sys::ensure_fds(args.conns as u64, 1)?;
    let mut line = br#"{"op":"register","name":"x","password":""#.to_vec();
    line.resize(args.bytes.max(line.len()), b'p');
    let before = rss_mib(args.server_pid);
    let mut streams = Vec::with_capacity(args.conns);
    let mut failed = 0;
    let line = std::sync::Arc::new(line);
    // A few hundred at a time: the accept queue is finite.
    let mut next = 0;
    while next < args.conns {
        let mut opens = tokio::task::JoinSet::new();
        for i in next..(next + 256).min(args.conns) {
            let line = line.clone();
            let from = source(i, args.sources);
            opens.spawn(async move { open(args.addr, from, &line).await });
        }
        next = (next + 256).min(args.conns);
        while let Some(result) = opens.join_next().await {
            match result {
                Ok(Ok(stream)) => streams.push(stream),
                _ => failed += 1,
            }
        }
    }
    let (held_high, held_last) = watch(args.server_pid, args.hold).await;
    let open = still_open(&streams);
    drop(streams);
    let (_, after) = watch(args.server_pid, args.settle).await;
    println!(
        "{}",
        serde_json::json!({
            "conns": args.conns,
            "bytes": args.bytes,
            "failed_to_open": failed,
            "open_at_end_of_hold": open,
            "rss_mib_before": before,
            "rss_mib_held_high": held_high,
            "rss_mib_held_last": held_last,
            "rss_mib_after_close": after,
        })
    );
    Ok(())
}
