//! The accept loop and the shutdown sequence.

use std::future::Future;
use std::sync::Arc;

use chat_proto::event::kick_reason;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::blocks::Blocks;
use crate::bus::local::LocalBus;
use crate::bus::Bus;
use crate::config::{Config, Db};
use crate::hub::Hub;
use crate::limits::{AddressLimits, AddressSlots, KeyedLimits};
use crate::mutes::Mutes;
use crate::password::Passwords;
use crate::state::{Ctx, StopSwitch};
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{CommitLog, Store};
use crate::{accept, cluster, dispatch, fds, ServerError};

/// Deletes messages older than `retention`, a chunk at a time so that traffic goes on
/// between chunks, every `every`.
async fn purge_history(
    store: Arc<dyn Store>,
    retention: std::time::Duration,
    every: std::time::Duration,
    stop: CancellationToken,
) {
    const CHUNK: usize = 5_000;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let keep = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let before = crate::ops::auth::now_ms().saturating_sub(keep);
        let mut purged = 0;
        loop {
            match store.purge_history(before, CHUNK).await {
                Ok(n) => {
                    purged += n;
                    if n < CHUNK as u64 {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "history purge failed; trying again later");
                    break;
                }
            }
        }
        if purged > 0 {
            tracing::info!(purged, "purged old messages");
        }
    }
}

/// Opens (creating and migrating as needed) the configured store.
pub async fn open_store(config: &Config) -> Result<(Arc<dyn Store>, CommitLog), ServerError> {
    let store_error = |e: crate::store::StoreError| ServerError::Store(e.to_string());
    match &config.db {
        Db::Sqlite(path) => {
            let (store, log) = SqliteStore::open(path, config.durability).map_err(store_error)?;
            Ok((Arc::new(store), log))
        }
        Db::Postgres(url) => {
            let (store, log) = PgStore::open(url).await.map_err(store_error)?;
            Ok((Arc::new(store), log))
        }
    }
}

/// Serves connections on `listener` until `shutdown` completes, without the HTTP
/// endpoints; see [`run_with_http`].
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    run_with_http(listener, None, config, shutdown).await
}

/// Serves connections on `listener` until `shutdown` completes; then stops accepting,
/// tells every session (`kicked` with reason `shutdown`), lets in-flight requests finish
/// (up to `config.shutdown_grace`), and commits and closes the store.
pub async fn run_with_http(
    listener: TcpListener,
    http: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let passwords = Passwords::new(config.hash_cost).map_err(ServerError::Config)?;
    let tls = match &config.tls {
        Some(files) => {
            Some(crate::tls::acceptor(&files.cert, &files.key).map_err(ServerError::Config)?)
        }
        None => None,
    };
    let (store, commits) = open_store(&config).await?;
    let admins = resolve_admins(store.as_ref(), &config.admins).await?;
    let mutes = Mutes::new(
        store
            .mutes(crate::ops::auth::now_ms())
            .await
            .map_err(|e| ServerError::Store(e.to_string()))?,
    );
    let blocks = Blocks::new(
        store
            .blocks()
            .await
            .map_err(|e| ServerError::Store(e.to_string()))?,
    );
    let hub = Hub::new();
    let cluster_stop = CancellationToken::new();
    let (bus, commits): (Arc<dyn Bus>, _) = match &config.cluster {
        Some(cluster) => {
            cluster::start(
                cluster,
                store.clone(),
                hub.clone(),
                mutes.clone(),
                blocks.clone(),
                commits,
                cluster_stop.clone(),
            )
            .await?
        }
        None => (Arc::new(LocalBus::new(hub.clone())), commits),
    };
    let dispatcher = tokio::spawn(dispatch::run(commits, store.clone(), hub.clone()));
    let ctx = Arc::new(Ctx {
        config: config.clone(),
        store: store.clone(),
        bus,
        hub,
        passwords,
        auth_limits: AddressLimits::new(config.auth_rate, config.auth_burst),
        address_slots: AddressSlots::new(config.max_connections_per_address),
        login_limits: KeyedLimits::new(
            crate::limits::LOGINS_PER_USER_RATE,
            crate::limits::LOGINS_PER_USER_BURST,
        ),
        mutes,
        blocks,
        admins,
        metrics: Arc::new(crate::metrics::Metrics::new()),
        stop: StopSwitch::default(),
        trust_order: config.cluster.is_none(),
    });
    if let Some(retention) = config.history_retention {
        tokio::spawn(purge_history(
            store.clone(),
            retention,
            config.purge_every,
            cluster_stop.clone(),
        ));
    }
    let open_files = fds::open_files_limit();
    let max_connections = fds::clamp_connections(config.max_connections, open_files);
    if max_connections < config.max_connections {
        tracing::warn!(
            wanted = config.max_connections,
            serving = max_connections,
            open_files,
            "--max-connections is more than the open-files limit allows; serving fewer \
             (raise the hard limit: ulimit -Hn, LimitNOFILE=)"
        );
    }
    let connections = Arc::new(Semaphore::new(max_connections));
    // Refusals take descriptors too: only so many at once (see `fds::RESERVED`).
    let refusing = Arc::new(Semaphore::new(fds::REFUSING));
    tracing::info!(
        addr = %DisplayAddr(listener.local_addr().ok()),
        db = %config.db.describe(),
        max_connections,
        proxy_protocol = ?config.proxy_protocol.as_ref().map(|t| t.from.iter().map(ToString::to_string).collect::<Vec<_>>()),
        "chatd serving"
    );

    let stop = CancellationToken::new();
    let sessions = TaskTracker::new();
    if let Some(http) = http {
        tracing::info!(addr = %DisplayAddr(http.local_addr().ok()), "http endpoints serving");
        let gate = crate::http::Gate {
            slots: connections.clone(),
            stop: stop.clone(),
            sessions: sessions.clone(),
        };
        tokio::spawn(crate::http::serve(
            http,
            tls.clone(),
            ctx.clone(),
            gate,
            cluster_stop.clone(),
        ));
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ctx.stop.requested() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match connections.clone().try_acquire_owned() {
                    Ok(permit) => {
                        // The session future is the task itself: wrapped in another
                        // `async` block it would be laid out twice (once captured, once
                        // awaited), doubling every connection's task.
                        sessions.spawn(accept::serve_tcp(
                            ctx.clone(),
                            stream,
                            peer,
                            tls.clone(),
                            stop.clone(),
                            permit,
                        ));
                    }
                    Err(_) => match refusing.clone().try_acquire_owned() {
                        Ok(refusal) => {
                            sessions.spawn(async move {
                                accept::refuse(stream, kick_reason::SERVER_FULL).await;
                                drop(refusal);
                            });
                        }
                        // Refusing as fast as it can: close without a word.
                        Err(_) => drop(stream),
                    },
                },
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
    }
    tracing::info!(sessions = sessions.len(), "shutting down");
    drop(listener);
    stop.cancel();
    sessions.close();
    let grace = ctx.stop.grace().unwrap_or(config.shutdown_grace);
    if tokio::time::timeout(grace, sessions.wait()).await.is_err() {
        tracing::warn!(
            left = sessions.len(),
            "sessions still open after the grace period"
        );
    }
    store.close().await;
    cluster_stop.cancel();
    let _ = dispatcher.await;
    tracing::info!("stopped");
    Ok(())
}

/// The ids of the users `--admins` names. A name no user has is refused: granting it
/// would make whoever registers that name first an admin.
async fn resolve_admins(
    store: &dyn Store,
    names: &[String],
) -> Result<std::collections::HashSet<chat_proto::UserId>, ServerError> {
    let mut ids = std::collections::HashSet::new();
    for name in names {
        let user = store
            .credentials_by_name(name)
            .await
            .map_err(|e| ServerError::Store(e.to_string()))?
            .ok_or_else(|| {
                ServerError::Config(format!(
                    "--admins: no user is named {name:?}; register it first (or grant rights \
                     with `chatd admin grant NAME`)"
                ))
            })?
            .user;
        ids.insert(user.id);
    }
    Ok(ids)
}

/// A listener's address in a log line: `127.0.0.1:6000`, not `Some(127.0.0.1:6000)`.
struct DisplayAddr(Option<std::net::SocketAddr>);

impl std::fmt::Display for DisplayAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("unknown"),
        }
    }
}
