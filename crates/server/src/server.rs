//! The accept loop and the shutdown sequence.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::local::LocalBus;
use crate::bus::Bus;
use crate::config::Config;
use crate::hub::Hub;
use crate::password::Passwords;
use crate::state::Ctx;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;
use crate::{dispatch, session, ServerError};

/// Serves connections on `listener` until `shutdown` completes; then stops accepting,
/// tells every session (`kicked` with reason `shutdown`), lets in-flight requests finish
/// (up to `config.shutdown_grace`), and commits and closes the store.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let passwords = Passwords::new(config.hash_cost).map_err(ServerError::Config)?;
    let (store, commits) = SqliteStore::open(&config.db_path, config.durability)
        .map_err(|e| ServerError::Store(e.to_string()))?;
    let store: Arc<dyn Store> = Arc::new(store);
    let hub = Hub::new();
    let bus: Arc<dyn Bus> = Arc::new(LocalBus::new(hub.clone()));
    let dispatcher = tokio::spawn(dispatch::run(commits, store.clone(), bus.clone()));
    let ctx = Arc::new(Ctx {
        config: config.clone(),
        store: store.clone(),
        bus,
        hub,
        passwords,
    });
    tracing::info!(addr = ?listener.local_addr().ok(), db = %config.db_path.display(), "chatd serving");

    let stop = CancellationToken::new();
    let sessions = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    sessions.spawn(session::serve_tcp(ctx.clone(), stream, peer, stop.clone()));
                }
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
    if tokio::time::timeout(config.shutdown_grace, sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = sessions.len(),
            "sessions still open after the grace period"
        );
    }
    store.close().await;
    let _ = dispatcher.await;
    tracing::info!("stopped");
    Ok(())
}
