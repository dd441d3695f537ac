//! `chatd`: parses flags (each also an environment variable), starts logging, binds the
//! listener and runs the server until SIGINT or SIGTERM.

use std::time::Duration;

use anyhow::Context;
use chat_server::config::TlsFiles;
use chat_server::proxy::{Cidr, ProxyTrust};
use chat_server::{Cluster, Config, Db, Durability, HashCost};
use clap::{Parser, ValueEnum};

/// jemalloc, not the system allocator: after thousands of connections come and go (a
/// reconnect storm, a flood of connections that never log in), glibc's malloc keeps the
/// freed memory in its per-thread arenas, and the process stays at its peak; jemalloc,
/// with its background purging thread, returns most of it within seconds even when the
/// server is idle. Measured in docs/BENCHMARKS.md (2026-12-02).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// chatd: an instant-messaging server (JSON lines over TCP) on an embedded store.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on.
    #[arg(long, env = "CHATD_LISTEN", default_value = "127.0.0.1:6000")]
    listen: String,
    /// Address of the operator's HTTP endpoints (/metrics, /healthz, /readyz); off
    /// without it.
    #[arg(long, env = "CHATD_HTTP")]
    http: Option<String>,
    /// Origins (`https://host[:port]`) whose web pages may open a WebSocket session on
    /// /ws, besides the server's own; `*` for any.
    #[arg(long, env = "CHATD_WS_ORIGIN", value_delimiter = ',')]
    ws_origin: Vec<String>,
    /// The store: a SQLite file path (created on first start), `sqlite:PATH`, or a
    /// PostgreSQL URL (`postgres://user@host/db`) for a cluster's shared store.
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
    /// The largest frame before login (a login or registration is small), in bytes;
    /// a longer one gets `too_large` and a close. At most --max-frame.
    #[arg(long, env = "CHATD_MAX_FRAME_BEFORE_LOGIN", default_value_t = 4 * 1024)]
    max_frame_before_login: usize,
    /// The longest message text, in characters.
    #[arg(long, env = "CHATD_MAX_TEXT", default_value_t = 4096)]
    max_text: usize,
    /// Days a session token stays valid.
    #[arg(long, env = "CHATD_TOKEN_TTL_DAYS", default_value_t = 30)]
    token_ttl_days: u64,
    /// Frames that may wait for one session; past that it is disconnected as a slow
    /// consumer (what it had not acked stays pending).
    #[arg(long, env = "CHATD_OUTBOUND_QUEUE", default_value_t = 4096)]
    outbound_queue: usize,
    /// Seconds one write to a client may take before the connection is closed.
    #[arg(long, env = "CHATD_WRITE_TIMEOUT", default_value_t = 10)]
    write_timeout: u64,
    /// The most connections served at once; past it a new one gets `server_full`. Fewer
    /// (with a warning) when the open-files limit has no room for them.
    #[arg(long, env = "CHATD_MAX_CONNECTIONS", default_value_t = 100_000)]
    max_connections: usize,
    /// The most connections one client address (an IPv6 /64) may hold at once; past it a
    /// new one gets `too_many_connections`. Users behind one NAT share an address: keep
    /// it well above one user's connections.
    #[arg(long, env = "CHATD_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 64)]
    max_connections_per_address: usize,
    /// Connections from --proxy-protocol-from start with a PROXY protocol header (v1 or
    /// v2, as nginx's `proxy_protocol on;` sends) naming the real client, whose address
    /// the per-address limits then use.
    #[arg(long, env = "CHATD_PROXY_PROTOCOL")]
    proxy_protocol: bool,
    /// The balancers trusted to send PROXY protocol headers (comma-separated addresses or
    /// networks, e.g. `127.0.0.1,10.0.0.0/8`); a connection from one of them MUST start
    /// with a header, from anywhere else none is honoured.
    #[arg(
        long,
        env = "CHATD_PROXY_PROTOCOL_FROM",
        value_delimiter = ',',
        default_value = "127.0.0.1,::1",
        requires = "proxy_protocol"
    )]
    proxy_protocol_from: Vec<Cidr>,
    /// Requests per second allowed to one connection (token bucket); past it requests
    /// get `rate_limited`, and a connection that keeps on at 4 times it is closed.
    #[arg(long, env = "CHATD_RATE", default_value_t = 50.0)]
    rate: f64,
    /// Requests one connection may make in a burst.
    #[arg(long, env = "CHATD_BURST", default_value_t = 100.0)]
    burst: f64,
    /// Registrations and password logins per second from one address.
    #[arg(long, env = "CHATD_AUTH_RATE", default_value_t = 2.0)]
    auth_rate: f64,
    /// Registrations and password logins one address may make in a burst.
    #[arg(long, env = "CHATD_AUTH_BURST", default_value_t = 20.0)]
    auth_burst: f64,
    /// Seconds shutdown waits for in-flight requests.
    #[arg(long, env = "CHATD_SHUTDOWN_GRACE", default_value_t = 5)]
    shutdown_grace: u64,
    /// argon2id memory per password hash, in KiB (lower only for tests and benchmarks).
    #[arg(long, env = "CHATD_HASH_MEMORY_KIB", default_value_t = HashCost::default().memory_kib)]
    hash_memory_kib: u32,
    /// argon2id passes per password hash.
    #[arg(long, env = "CHATD_HASH_ITERATIONS", default_value_t = HashCost::default().iterations)]
    hash_iterations: u32,
    /// Join a cluster through this Redis (`redis://host:port`): nodes share a PostgreSQL
    /// `--db` and exchange messages and presence through Redis.
    #[arg(long, env = "CHATD_REDIS")]
    redis: Option<String>,
    /// This node's id in the cluster (default: generated from the host name and pid).
    #[arg(long, env = "CHATD_NODE_ID")]
    node_id: Option<String>,
    /// Prefix of the cluster's Redis keys and channels (several clusters can share a Redis).
    #[arg(long, env = "CHATD_REDIS_PREFIX", default_value = "chatd:")]
    redis_prefix: String,
    /// PEM certificate chain: with --tls-key, the listener speaks TLS.
    #[arg(long, env = "CHATD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "CHATD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Users who are admins whatever the store says (comma-separated names).
    #[arg(long, env = "CHATD_ADMINS", value_delimiter = ',')]
    admins: Vec<String>,
    /// Whom `users` lists to a user who is not an admin: its online `friends`, or `all`
    /// online users.
    #[arg(long, env = "CHATD_LIST_USERS", default_value = "friends", value_parser = ["friends", "all"])]
    list_users: String,
    /// Days a pending message waits for delivery before it is dropped from delivery (it
    /// stays in history).
    #[arg(long, env = "CHATD_PENDING_TTL_DAYS", default_value_t = 30.0)]
    pending_ttl_days: f64,
    /// Days messages are kept; older ones are deleted in the background (default: for ever).
    #[arg(long, env = "CHATD_HISTORY_RETENTION_DAYS")]
    history_retention_days: Option<f64>,
    /// Worker threads (default: one per core).
    #[arg(long, env = "CHATD_THREADS")]
    threads: Option<usize>,
}

/// Commands other than serving.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Administration of the configured store (`--db`); works while a server runs on it.
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
}

#[derive(Debug, clap::Subcommand)]
enum AdminAction {
    /// Makes a user an admin (it sees it at its next login).
    Grant { name: String },
    /// Makes an admin an ordinary user again.
    Revoke { name: String },
    /// Sets a user's password, read as the first line of standard input, and revokes
    /// every session token of the account (its live session, if any, ends at its next
    /// login).
    ResetPassword { name: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DurabilityArg {
    Full,
    Normal,
}

impl Args {
    fn config(&self) -> anyhow::Result<Config> {
        anyhow::ensure!(
            self.max_frame >= 256,
            "--max-frame must be at least 256 bytes"
        );
        anyhow::ensure!(
            self.max_frame_before_login >= 256,
            "--max-frame-before-login must be at least 256 bytes"
        );
        anyhow::ensure!(
            self.max_connections_per_address >= 1,
            "--max-connections-per-address must be at least 1"
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
        let db = Db::parse(&self.db);
        let cluster = match &self.redis {
            None => None,
            Some(url) => {
                anyhow::ensure!(
                    matches!(db, Db::Postgres(_)),
                    "--redis needs a shared PostgreSQL store: --db postgres://..."
                );
                Some(Cluster {
                    redis_url: url.clone(),
                    node_id: self.node_id.clone().unwrap_or_else(default_node_id),
                    key_prefix: self.redis_prefix.clone(),
                })
            }
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        Ok(Config {
            db,
            cluster,
            tls,
            durability: match self.durability {
                DurabilityArg::Full => Durability::Full,
                DurabilityArg::Normal => Durability::Normal,
            },
            login_timeout: Duration::from_secs(self.login_timeout),
            idle_timeout: Duration::from_secs(self.idle_timeout),
            max_frame: self.max_frame,
            max_frame_before_login: self.max_frame_before_login.min(self.max_frame),
            max_text: self.max_text,
            token_ttl: Duration::from_secs(self.token_ttl_days * 24 * 3600),
            hash_cost: HashCost {
                memory_kib: self.hash_memory_kib,
                iterations: self.hash_iterations,
                parallelism: 1,
            },
            outbound_queue: self.outbound_queue,
            write_timeout: Duration::from_secs(self.write_timeout),
            max_connections: self.max_connections,
            max_connections_per_address: self.max_connections_per_address,
            proxy_protocol: self.proxy_protocol.then(|| ProxyTrust {
                from: self.proxy_protocol_from.clone(),
            }),
            request_rate: self.rate,
            request_burst: self.burst,
            auth_rate: self.auth_rate,
            auth_burst: self.auth_burst,
            admins: self.admins.clone(),
            list_all_users: self.list_users == "all",
            ws_origins: self.ws_origin.clone(),
            pending_ttl: days(self.pending_ttl_days, "--pending-ttl-days")?,
            history_retention: self
                .history_retention_days
                .map(|d| days(d, "--history-retention-days"))
                .transpose()?,
            purge_every: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
        })
    }
}

/// A number of days as a duration, refusing nonsense.
fn days(days: f64, flag: &str) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        days.is_finite() && days > 0.0 && days < 100_000.0,
        "{flag} must be a positive number of days"
    );
    Ok(Duration::from_secs_f64(days * 24.0 * 3600.0))
}

/// Runs `chatd admin ...` against the configured store, then exits.
async fn admin(config: &Config, action: &AdminAction) -> anyhow::Result<()> {
    let (name, admin) = match action {
        AdminAction::Grant { name } => (name, true),
        AdminAction::Revoke { name } => (name, false),
        AdminAction::ResetPassword { name } => return reset_password(config, name).await,
    };
    let (store, _log) = chat_server::open_store(config).await?;
    let result = store.set_admin(name, admin).await;
    store.close().await;
    let user = result.with_context(|| format!("cannot change user {name}"))?;
    tracing::info!(user = user.id, name = %user.name, admin, "admin rights changed");
    println!(
        "{} ({}) is {}",
        user.name,
        user.id,
        if admin { "an admin" } else { "not an admin" }
    );
    Ok(())
}

/// `chatd admin reset-password NAME`: the new password is the first line of stdin.
async fn reset_password(config: &Config, name: &str) -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the new password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    let chars = password.chars().count();
    anyhow::ensure!(
        (1..=128).contains(&chars),
        "the new password must be 1 to 128 characters (the first line of standard input)"
    );
    let passwords =
        chat_server::password::Passwords::new(config.hash_cost).map_err(anyhow::Error::msg)?;
    let hash = passwords.hash(password).await.map_err(anyhow::Error::msg)?;
    let (store, _log) = chat_server::open_store(config).await?;
    let result = async {
        let user = store
            .credentials_by_name(name)
            .await?
            .ok_or(chat_server::store::StoreError::NotFound("no such user"))?
            .user;
        store.set_password(user.id, &hash).await?;
        let revoked = store.revoke_tokens(user.id).await?;
        Ok::<_, chat_server::store::StoreError>((user, revoked))
    }
    .await;
    store.close().await;
    let (user, revoked) = result.with_context(|| format!("cannot reset the password of {name}"))?;
    tracing::info!(user = user.id, revoked, "password reset by the operator");
    println!(
        "{} ({}): password set; {revoked} session token(s) revoked",
        user.name, user.id
    );
    Ok(())
}

/// A node id unique enough for one cluster: host name, process id, a random suffix.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_string());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}-{}-{:04x}", std::process::id(), nanos & 0xffff)
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
    // Every connection is a file: take all the system allows (the server serves no more
    // connections than fit; see chat_server::fds).
    let open_files = chat_server::fds::raise_open_files_limit();
    tracing::debug!(?open_files, "open-files limit");
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(async {
        if let Some(Command::Admin { action }) = &args.command {
            return admin(&config, action).await;
        }
        let listener = listen(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        // One line on stdout for scripts and tests that start chatd on port 0.
        println!("chatd listening on {}", listener.local_addr()?);
        let http = match &args.http {
            Some(addr) => {
                let http = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (--http)"))?;
                println!("chatd http on {}", http.local_addr()?);
                Some(http)
            }
            None => None,
        };
        chat_server::run_with_http(listener, http, config, shutdown_signal()).await?;
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
