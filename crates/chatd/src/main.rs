//! `chatd`: parses flags (each also an environment variable), starts logging, binds the
//! listener and runs the server until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chat_server::{Config, Durability, HashCost};
use clap::{Parser, ValueEnum};

/// chatd: an instant-messaging server (JSON lines over TCP) on an embedded store.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "CHATD_LISTEN", default_value = "127.0.0.1:6000")]
    listen: String,
    /// The store: a SQLite file path (created on first start), or `sqlite:PATH`.
    #[arg(long, env = "CHATD_DB", default_value = "chatd.db")]
    db: String,
    /// How commits reach the disk: `full` fsyncs every group commit; `normal` survives a
    /// crash of chatd but not of the machine.
    #[arg(long, env = "CHATD_DURABILITY", value_enum, default_value_t = DurabilityArg::Full)]
    durability: DurabilityArg,
    /// Seconds a new connection has to log in.
    #[arg(long, env = "CHATD_LOGIN_TIMEOUT", default_value_t = 10)]
    login_timeout: u64,
    /// Seconds of silence after which a connection is closed (clients ping well within).
    #[arg(long, env = "CHATD_IDLE_TIMEOUT", default_value_t = 90)]
    idle_timeout: u64,
    /// The largest request frame, in bytes; a longer one gets `too_large` and a close.
    #[arg(long, env = "CHATD_MAX_FRAME", default_value_t = 64 * 1024)]
    max_frame: usize,
    /// The longest message text, in characters.
    #[arg(long, env = "CHATD_MAX_TEXT", default_value_t = 4096)]
    max_text: usize,
    /// Days a session token stays valid.
    #[arg(long, env = "CHATD_TOKEN_TTL_DAYS", default_value_t = 30)]
    token_ttl_days: u64,
    /// Frames that may wait for one session before it must catch up from the store.
    #[arg(long, env = "CHATD_OUTBOUND_QUEUE", default_value_t = 4096)]
    outbound_queue: usize,
    /// Seconds shutdown waits for in-flight requests.
    #[arg(long, env = "CHATD_SHUTDOWN_GRACE", default_value_t = 5)]
    shutdown_grace: u64,
    /// argon2id memory per password hash, in KiB (lower only for tests and benchmarks).
    #[arg(long, env = "CHATD_HASH_MEMORY_KIB", default_value_t = HashCost::default().memory_kib)]
    hash_memory_kib: u32,
    /// argon2id passes per password hash.
    #[arg(long, env = "CHATD_HASH_ITERATIONS", default_value_t = HashCost::default().iterations)]
    hash_iterations: u32,
    /// Worker threads (default: one per core).
    #[arg(long, env = "CHATD_THREADS")]
    threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DurabilityArg {
    Full,
    Normal,
}

impl Args {
    fn config(&self) -> anyhow::Result<Config> {
        let db_path = PathBuf::from(self.db.strip_prefix("sqlite:").unwrap_or(&self.db));
        anyhow::ensure!(
            self.max_frame >= 256,
            "--max-frame must be at least 256 bytes"
        );
        anyhow::ensure!(self.max_text >= 1, "--max-text must be at least 1");
        anyhow::ensure!(
            self.outbound_queue >= 16,
            "--outbound-queue must be at least 16"
        );
        anyhow::ensure!(
            self.login_timeout >= 1,
            "--login-timeout must be at least 1 s"
        );
        anyhow::ensure!(
            self.idle_timeout >= 1,
            "--idle-timeout must be at least 1 s"
        );
        Ok(Config {
            db_path,
            durability: match self.durability {
                DurabilityArg::Full => Durability::Full,
                DurabilityArg::Normal => Durability::Normal,
            },
            login_timeout: Duration::from_secs(self.login_timeout),
            idle_timeout: Duration::from_secs(self.idle_timeout),
            max_frame: self.max_frame,
            max_text: self.max_text,
            token_ttl: Duration::from_secs(self.token_ttl_days * 24 * 3600),
            hash_cost: HashCost {
                memory_kib: self.hash_memory_kib,
                iterations: self.hash_iterations,
                parallelism: 1,
            },
            outbound_queue: self.outbound_queue,
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
        })
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = args.config()?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(async {
        let listener = listen(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        chat_server::run(listener, config, shutdown_signal()).await?;
        Ok(())
    })
}

/// The kernel caps the accept queue at net.core.somaxconn; ask for plenty so that a
/// reconnect storm is queued rather than dropped (a dropped SYN costs the client 1 s).
const LISTEN_BACKLOG: u32 = 65_535;

/// Binds `addr` with a deep accept queue.
async fn listen(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let addr = tokio::net::lookup_host(addr)
        .await?
        .next()
        .context("the address resolves to nothing")?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket.listen(LISTEN_BACKLOG)?)
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
