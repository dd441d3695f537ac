//! chat-bench against a real chatd (in this process, on port 0, fresh store), at small
//! sizes: it must count right, and report losses and duplicates when there are some (a
//! proxy between bench and server drops and repeats chosen messages).

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chat_bench::cli::{ChatOpts, Command, Common, ConnsOpts, GroupOpts, StormOpts, TrafficOpts};
use chat_bench::record::Record;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

struct Server {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = chat_server::Config::for_tests(dir.path().join("chat.db"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        chat_server::run(listener, config, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Server {
        addr,
        dir,
        _stop: stop,
    }
}

fn common(addr: SocketAddr, cache: &Path) -> Common {
    Common {
        addrs: vec![addr],
        procs: 1,
        prefix: None,
        token_cache: Some(cache.to_path_buf()),
        no_token_cache: false,
        server_pid: Some(std::process::id()),
        tls: false,
        ca: None,
        sources: 4,
        login_concurrency: 64,
        setup_timeout: 30.0,
        quiet: true,
    }
}

fn traffic(rate: f64, drain: f64) -> TrafficOpts {
    TrafficOpts {
        rate,
        duration: 1.0,
        size: 0,
        drain,
        max_inflight: 1000,
        ack_ms: 50,
    }
}

fn chat(addr: SocketAddr, cache: &Path, users: u64, rate: f64, drain: f64) -> Command {
    Command::Chat(ChatOpts {
        common: common(addr, cache),
        traffic: traffic(rate, drain),
        users,
        sweep: false,
        sweep_factor: 1.5,
        sweep_steps: 3,
        p99_bound_ms: 50.0,
    })
}

/// The JSON line must read back as the same counts.
fn check_json(record: &Record) {
    let back: Record = serde_json::from_str(&record.to_json_line()).unwrap();
    assert_eq!(
        (back.sent, back.delivered, back.lost, back.duplicated),
        (
            record.sent,
            record.delivered,
            record.lost,
            record.duplicated
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_counts_every_message_and_reuses_tokens() {
    let server = start_server().await;
    let cache = server.dir.path().join("tokens");
    let record = chat_bench::run(&chat(server.addr, &cache, 200, 2000.0, 5.0))
        .await
        .unwrap();
    assert!(record.ok, "{}", record.human());
    assert_eq!(record.logged_in, 200);
    assert_eq!(record.registered, 200);
    // 200 senders at 10/s each for 1 s.
    assert_eq!(record.sent, 2000, "{}", record.human());
    assert_eq!(record.delivered, record.sent);
    assert_eq!((record.lost, record.duplicated, record.unsent), (0, 0, 0));
    assert!(record.errors.is_empty() && record.dropped == 0);
    assert_eq!(record.latency_ms.as_ref().unwrap().count, 2000);
    assert!(record.rss_after.is_some());
    check_json(&record);

    // A second run logs in by token, and sees nothing left over from the first.
    let again = chat_bench::run(&chat(server.addr, &cache, 200, 1000.0, 5.0))
        .await
        .unwrap();
    assert!(again.ok, "{}", again.human());
    assert_eq!((again.logins_token, again.logins_password), (200, 0));
    assert_eq!((again.sent, again.delivered, again.stray), (1000, 1000, 0));
}

/// A proxy that forwards everything but drops every 10th `msg` event it passes to a
/// client and sends every 7th twice. Returns its address and the counts.
async fn lossy_proxy(server: SocketAddr) -> (SocketAddr, Arc<(AtomicU64, AtomicU64)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let seen = Arc::new(AtomicU64::new(0));
    let c = counts.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = TcpStream::connect(server).await.unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (ur, mut uw) = upstream.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut uw).await;
                let _ = uw.shutdown().await;
            });
            let (c, seen) = (c.clone(), seen.clone());
            tokio::spawn(async move {
                let mut lines = BufReader::new(ur).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut copies = 1;
                    if line.starts_with(r#"{"event":"msg""#) || line.contains(r#""event":"msg""#) {
                        let k = seen.fetch_add(1, Ordering::Relaxed) + 1;
                        if k % 10 == 0 {
                            copies = 0;
                            c.0.fetch_add(1, Ordering::Relaxed);
                        } else if k % 7 == 0 {
                            copies = 2;
                            c.1.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    for _ in 0..copies {
                        if cw.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_reports_exactly_what_was_lost_and_duplicated() {
    let server = start_server().await;
    let (proxy, counts) = lossy_proxy(server.addr).await;
    let cache = server.dir.path().join("tokens");
    let mut command = chat(proxy, &cache, 40, 400.0, 1.0);
    if let Command::Chat(opts) = &mut command {
        opts.common.sources = 0;
    }
    let record = chat_bench::run(&command).await.unwrap();
    let dropped = counts.0.load(Ordering::Relaxed);
    let doubled = counts.1.load(Ordering::Relaxed);
    assert_eq!(record.sent, 400, "{}", record.human());
    assert!(dropped > 0 && doubled > 0);
    assert_eq!(record.lost, dropped, "{}", record.human());
    assert_eq!(record.duplicated, doubled, "{}", record.human());
    assert_eq!(record.delivered, record.sent - dropped);
    assert!(!record.ok);
    check_json(&record);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_fans_out_to_every_member() {
    let server = start_server().await;
    let cache = server.dir.path().join("tokens");
    let command = Command::Group(GroupOpts {
        common: common(server.addr, &cache),
        traffic: traffic(100.0, 5.0),
        members: 60,
        senders: 3,
    });
    let record = chat_bench::run(&command).await.unwrap();
    assert!(record.ok, "{}", record.human());
    assert_eq!(record.sent, 100, "{}", record.human());
    assert_eq!(record.expected, 100 * 59);
    assert_eq!(record.delivered, record.expected);
    assert_eq!((record.lost, record.duplicated), (0, 0));
    check_json(&record);
    // The group is reused from the cache the second time.
    let again = chat_bench::run(&command).await.unwrap();
    assert!(again.ok, "{}", again.human());
    assert_eq!(again.group, record.group);
    assert_eq!(again.delivered, 100 * 59);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conns_holds_and_storm_comes_back() {
    let server = start_server().await;
    let cache = server.dir.path().join("tokens");
    let conns = Command::Conns(ConnsOpts {
        common: common(server.addr, &cache),
        users: 300,
        hold: 1.0,
        ping_secs: 0.2,
    });
    let record = chat_bench::run(&conns).await.unwrap();
    assert!(record.ok, "{}", record.human());
    assert_eq!(
        (record.logged_in, record.held, record.dropped),
        (300, Some(300), 0)
    );
    assert!(record.rss_per_conn.is_some());
    check_json(&record);

    let storm = Command::Storm(StormOpts {
        common: common(server.addr, &cache),
        users: 300,
        timeout: 20.0,
    });
    let record = chat_bench::run(&storm).await.unwrap();
    assert!(record.ok, "{}", record.human());
    assert_eq!(record.reconnected, Some(300));
    assert_eq!(record.latency_ms.as_ref().unwrap().count, 300);
    assert!(record.storm_secs.unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn procs_spreads_the_users_and_merges_the_results() {
    let server = start_server().await;
    let cache = server.dir.path().join("tokens");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .args([
            "chat", "--procs", "2", "-n", "40", "--rate", "400", "-t", "1",
        ])
        .args([
            "--drain",
            "5",
            "--quiet",
            "--addr",
            &server.addr.to_string(),
        ])
        .arg("--token-cache")
        .arg(&cache)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().unwrap();
    let record: Record = serde_json::from_str(last).unwrap();
    assert_eq!((record.procs, record.users, record.logged_in), (2, 40, 40));
    assert_eq!((record.sent, record.delivered, record.lost), (400, 400, 0));
    assert_eq!(record.latency_ms.unwrap().count, 400);
}
