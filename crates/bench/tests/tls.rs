//! chat-bench over TLS: a chatd in this process with a self-signed certificate made at
//! run time, and the `chat` scenario at a small size with `--tls --ca`; it must count
//! every message, as over plain TCP.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chat_bench::cli::{ChatOpts, Command, Common, TrafficOpts};
use tokio::net::TcpListener;

/// A self-signed certificate for 127.0.0.1 and localhost, as `cert.pem` and `key.pem`
/// in `dir`.
fn make_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

fn chat_over_tls(addr: SocketAddr, cache: &Path, ca: Option<PathBuf>) -> Command {
    Command::Chat(ChatOpts {
        common: Common {
            addrs: vec![addr],
            procs: 1,
            prefix: None,
            token_cache: Some(cache.to_path_buf()),
            no_token_cache: false,
            server_pid: None,
            tls: true,
            ca,
            sources: 4,
            login_concurrency: 64,
            setup_timeout: 30.0,
            quiet: true,
        },
        traffic: TrafficOpts {
            rate: 400.0,
            duration: 1.0,
            size: 100,
            drain: 5.0,
            max_inflight: 1000,
            ack_ms: 50,
        },
        users: 40,
        sweep: false,
        sweep_factor: 1.5,
        sweep_steps: 3,
        p99_bound_ms: 50.0,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_over_tls_counts_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = chat_server::Config {
        tls: Some(chat_server::config::TlsFiles {
            cert: cert.clone(),
            key,
        }),
        ..chat_server::Config::for_tests(dir.path().join("chat.db"))
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(chat_server::run(listener, config, async move {
        let _ = stopped.await;
    }));
    let cache = dir.path().join("tokens");

    let record = chat_bench::run(&chat_over_tls(addr, &cache, Some(cert.clone())))
        .await
        .unwrap();
    assert!(record.ok, "{}", record.human());
    assert_eq!(record.logged_in, 40, "{}", record.human());
    // 40 senders at 10/s each for 1 s.
    assert_eq!(record.sent, 400, "{}", record.human());
    assert_eq!(record.delivered, record.sent);
    assert_eq!((record.lost, record.duplicated, record.unsent), (0, 0, 0));
    assert!(record.errors.is_empty() && record.dropped == 0);

    // Without the CA, the handshake fails for every user: nobody logs in.
    let untrusted = chat_bench::run(&chat_over_tls(addr, &cache, None))
        .await
        .unwrap();
    assert_eq!(untrusted.logged_in, 0, "{}", untrusted.human());
    assert!(!untrusted.ok);
    assert_eq!(untrusted.setup_errors.values().sum::<u64>(), 40);

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
