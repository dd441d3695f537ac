//! The PostgreSQL store on its own, where the suite through the server cannot reach:
//! two nodes on one database (migrations at once, unique ids and gapless seqs without a
//! shared lock),
//! and PostgreSQL going away or hanging (writes and reads fail `Unavailable` within a
//! bound, and work again when it is back).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_server::store::postgres::PgStore;
use chat_server::store::{Commit, CommitBatch, CommitLog, GroupSettings, Store, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::util::PgSchema;

/// A group anyone may join.
const OPEN: GroupSettings = GroupSettings {
    open: true,
    shared_history: false,
};

/// Takes every batch already in the log.
fn drain(log: &mut CommitLog) -> Vec<CommitBatch> {
    let mut batches = Vec::new();
    while let Ok(batch) = log.try_recv() {
        batches.push(batch);
    }
    batches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_migrate_at_once_and_write_without_a_shared_lock() {
    let schema = PgSchema::create().await;
    let (a, b) = tokio::join!(PgStore::open(&schema.url), PgStore::open(&schema.url));
    let ((a, mut log_a), (b, mut log_b)) = (a.unwrap(), b.unwrap());
    let (a, b) = (Arc::new(a), Arc::new(b));

    let alice = a.create_user("alice", "hash").await.unwrap();
    let bob = b.create_user("bob", "hash").await.unwrap();
    assert!(matches!(
        b.create_user("alice", "hash").await,
        Err(StoreError::Conflict(_))
    ));
    let group = a.create_group(alice.id, "g", "", OPEN).await.unwrap();
    b.join_group(group.id, bob.id).await.unwrap();

    // Both nodes send at once, many writes in flight on each.
    const EACH: usize = 200;
    let mut sends = Vec::new();
    for i in 0..EACH {
        let (a, b, alice, bob) = (a.clone(), b.clone(), alice.clone(), bob.clone());
        sends.push(tokio::spawn(async move {
            a.send(&alice, bob.id, &format!("a{i}"), None)
                .await
                .unwrap();
        }));
        sends.push(tokio::spawn(async move {
            b.group_send(&bob, group.id, &format!("b{i}"), None)
                .await
                .unwrap();
        }));
    }
    for send in sends {
        send.await.unwrap();
    }
    a.close().await;
    b.close().await;

    // No lock shared by the nodes: every message id is taken once, and each
    // conversation's seqs are 1..=EACH with no gap, whichever node wrote them.
    let (batches_a, batches_b) = (drain(&mut log_a), drain(&mut log_b));
    let mut ids = std::collections::HashSet::new();
    let mut seqs: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for batch in batches_a.iter().chain(&batches_b) {
        for commit in &batch.commits {
            if let Commit::Msg(msg) = commit {
                assert!(ids.insert(msg.id), "id {} given out twice", msg.id);
                seqs.entry(msg.conv).or_default().push(msg.seq);
            }
        }
    }
    assert_eq!(ids.len(), 2 * EACH);
    assert_eq!(seqs.len(), 2, "{:?}", seqs.keys());
    for (conv, mut got) in seqs {
        got.sort_unstable();
        assert_eq!(
            got,
            (1..=EACH as i64).collect::<Vec<_>>(),
            "conversation {conv}"
        );
    }
}

/// How the proxy treats the traffic between the store and PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    /// Connections stay open and nothing gets through: PostgreSQL hung, or the network.
    Hang,
    /// Every connection is closed and new ones are refused at once.
    Down,
}

/// A TCP proxy in front of PostgreSQL that a test can hang or take down.
struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(Mode::Forward);
        let modes = mode.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *modes.borrow() == Mode::Down {
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, modes.subscribe()));
                tokio::spawn(pipe(sr, cw, modes.subscribe()));
            }
        });
        Proxy { addr, mode }
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

/// Copies one direction; holds the bytes while hung; drops both ends when down.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = mode.wait_for(|m| *m == Mode::Down) => return,
        };
        match mode.wait_for(|m| *m != Mode::Hang).await {
            Ok(m) if *m == Mode::Forward => {}
            _ => return,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// `url` with its host and port replaced by `addr`.
fn url_via(url: &str, addr: SocketAddr) -> String {
    let config: tokio_postgres::Config = url.parse().unwrap();
    let user = config.get_user().unwrap_or("postgres");
    let password = config
        .get_password()
        .map(|p| format!(":{}", String::from_utf8_lossy(p)))
        .unwrap_or_default();
    let db = config.get_dbname().unwrap_or(user);
    let query = url.split_once('?').map_or("", |(_, q)| q);
    format!("postgres://{user}{password}@{addr}/{db}?{query}")
}

/// Where `url` points (the first host, which must be a TCP one).
async fn upstream(url: &str) -> SocketAddr {
    let config: tokio_postgres::Config = url.parse().unwrap();
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        other => panic!("the proxy test needs a TCP host, not {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let mut addrs = tokio::net::lookup_host(format!("{host}:{port}"))
        .await
        .unwrap();
    addrs.next().unwrap()
}

/// Runs `op`, which must fail with `Unavailable` within `limit`.
async fn unavailable_within<T: std::fmt::Debug>(
    limit: Duration,
    what: &str,
    op: impl std::future::Future<Output = Result<T, StoreError>>,
) {
    let started = Instant::now();
    let result = tokio::time::timeout(limit + Duration::from_secs(5), op)
        .await
        .unwrap_or_else(|_| panic!("{what}: still waiting after {limit:?}"));
    let took = started.elapsed();
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{what}: {result:?}"
    );
    assert!(took <= limit, "{what}: failed only after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_postgres_is_down_or_hangs_operations_fail_unavailable_in_bounded_time() {
    let schema = PgSchema::create().await;
    let proxy = Proxy::start(upstream(&schema.url).await).await;
    let (store, mut log) = PgStore::open(&url_via(&schema.url, proxy.addr))
        .await
        .unwrap();
    let alice = store.create_user("alice", "hash").await.unwrap();
    let bob = store.create_user("bob", "hash").await.unwrap();
    store.send(&alice, bob.id, "before", None).await.unwrap();
    assert_eq!(drain(&mut log).len(), 1);

    // Hung, with the connections open (the writer's, and a reader's in the pool): fails
    // within the store's deadlines (a batch 5 s, a read 5 s), never hangs.
    assert_eq!(store.user(bob.id).await.unwrap().unwrap().name, "bob");
    proxy.set(Mode::Hang);
    let limit = Duration::from_secs(7);
    unavailable_within(limit, "send, hung", store.send(&alice, bob.id, "x", None)).await;
    unavailable_within(limit, "read, hung", store.user(bob.id)).await;
    unavailable_within(
        limit,
        "join, hung",
        store.create_group(alice.id, "g", "", OPEN),
    )
    .await;

    // Down: connections closed, new ones refused. Fails fast.
    proxy.set(Mode::Down);
    let limit = Duration::from_secs(3);
    unavailable_within(limit, "send, down", store.send(&alice, bob.id, "y", None)).await;
    unavailable_within(limit, "read, down", store.friends(alice.id)).await;

    // Nothing failed was logged, and nothing of it was stored.
    assert!(drain(&mut log).is_empty());
    proxy.set(Mode::Forward);
    // Back: the writer and the pool reconnect.
    let deadline = Instant::now() + Duration::from_secs(10);
    let msg = loop {
        match store.send(&alice, bob.id, "after", None).await {
            Ok(msg) => break msg,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the store did not come back: {e}"),
        }
    };
    let texts: Vec<String> = store
        .history(
            alice.id,
            chat_server::store::Conversation::With(bob.id),
            None,
            10,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["before", "after"]);
    assert!(msg.seq == 2, "{msg:?}");
    store.close().await;
}
