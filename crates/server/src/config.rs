//! Validated settings of a running server. The `chatd` binary turns its flags into a
//! [`Config`]; tests build one with short timeouts and a cheap password hash.

use std::path::PathBuf;
use std::time::Duration;

/// How hard password hashing (argon2id) works. The default follows OWASP's advice
/// (19 MiB, 2 passes); tests and benchmarks may lower it, never production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    /// Memory per hash, in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for HashCost {
    fn default() -> Self {
        HashCost {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl HashCost {
    /// The cheapest cost argon2 accepts: for tests only.
    pub const TEST: HashCost = HashCost {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };
}

/// How the embedded store makes commits durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync at every (group) commit: nothing acknowledged is lost, even on power loss.
    #[default]
    Full,
    /// fsync at checkpoints only: survives a crash of chatd, not of the machine.
    Normal,
}

/// Where the store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Db {
    /// The embedded store: a SQLite file, created and migrated on first start.
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://...`), shared by the nodes of a cluster.
    Postgres(String),
}

impl Db {
    /// Reads a `--db` value: a `postgres://` or `postgresql://` URL, or a SQLite file path
    /// (optionally prefixed `sqlite:`).
    pub fn parse(value: &str) -> Db {
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            Db::Postgres(value.to_string())
        } else {
            Db::Sqlite(PathBuf::from(
                value.strip_prefix("sqlite:").unwrap_or(value),
            ))
        }
    }

    /// The store as it may be logged: a PostgreSQL URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Db::Sqlite(path) => format!("sqlite:{}", path.display()),
            Db::Postgres(url) => match (url.find("://"), url.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    format!("{}://***{}", &url[..scheme], &url[at..])
                }
                _ => url.clone(),
            },
        }
    }
}

/// How a node joins a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// `redis://...`: pub/sub between the nodes and cluster-wide presence.
    pub redis_url: String,
    /// This node's id, unique in the cluster.
    pub node_id: String,
    /// Prefix of every Redis key and channel, so that clusters (and tests) can share a Redis.
    pub key_prefix: String,
}

/// The certificate that turns TLS on for the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Everything a server needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// TLS on the listener; `None` for plain TCP.
    pub tls: Option<TlsFiles>,
    /// The store.
    pub db: Db,
    /// Cluster membership; `None` for a single node.
    pub cluster: Option<Cluster>,
    pub durability: Durability,
    /// A connection that has not logged in by then is closed.
    pub login_timeout: Duration,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// The largest frame accepted, in bytes.
    pub max_frame: usize,
    /// The largest frame accepted before login (and after logout), in bytes: a login or
    /// registration is small, and a connection that has not said who it is must not
    /// make the server hold `max_frame` bytes for it.
    pub max_frame_before_login: usize,
    /// The longest message text, in characters.
    pub max_text: usize,
    /// How long a session token stays valid.
    pub token_ttl: Duration,
    pub hash_cost: HashCost,
    /// How many frames may wait for one session; past that it is a slow consumer and is
    /// disconnected (what it had not acked stays pending).
    pub outbound_queue: usize,
    /// How long one write to a client may take before the connection is closed.
    pub write_timeout: Duration,
    /// The most connections served at once; past it a new one gets `server_full`. The
    /// server serves fewer when the open-files limit leaves less room ([`crate::fds`]).
    pub max_connections: usize,
    /// The most connections one source address (an IPv6 /64) may hold at once; past it
    /// a new one gets `too_many_connections`. Behind a NAT many users share an address,
    /// so this is well above what one user opens.
    pub max_connections_per_address: usize,
    /// Connections from these networks start with a PROXY protocol header naming the
    /// real client (`--proxy-protocol`); `None`: no header is looked for.
    pub proxy_protocol: Option<crate::proxy::ProxyTrust>,
    /// Requests a connection may make per second (a token bucket)...
    pub request_rate: f64,
    /// ...and in a burst. Past it requests get `rate_limited`; a connection that keeps on
    /// at several times the rate is closed.
    pub request_burst: f64,
    /// Users who are admins whatever the store says (`--admins`).
    pub admins: Vec<String>,
    /// `users` lists everyone online to everyone (`--list-users all`); by default a user
    /// sees only its online friends (an admin, everyone).
    pub list_all_users: bool,
    /// Origins (`https://host[:port]`) whose pages may open a WebSocket session, besides
    /// this server's own (`--ws-origin`; `*` for any).
    pub ws_origins: Vec<String>,
    /// A pending message not delivered within this long is dropped from delivery (it
    /// stays in history).
    pub pending_ttl: Duration,
    /// Messages older than this are deleted; `None` keeps them for ever.
    pub history_retention: Option<Duration>,
    /// How often the purge of old messages runs.
    pub purge_every: Duration,
    /// Registrations and password logins per second from one address...
    pub auth_rate: f64,
    /// ...and in a burst.
    pub auth_burst: f64,
    /// How long shutdown waits for sessions to finish what is in flight.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            db: Db::Sqlite(PathBuf::from("chatd.db")),
            cluster: None,
            tls: None,
            durability: Durability::Full,
            login_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_frame: 64 * 1024,
            max_frame_before_login: 4 * 1024,
            max_text: 4096,
            token_ttl: Duration::from_secs(30 * 24 * 3600),
            hash_cost: HashCost::default(),
            outbound_queue: 4096,
            write_timeout: Duration::from_secs(10),
            max_connections: 100_000,
            max_connections_per_address: 64,
            proxy_protocol: None,
            admins: Vec::new(),
            list_all_users: false,
            ws_origins: Vec::new(),
            pending_ttl: Duration::from_secs(30 * 24 * 3600),
            history_retention: None,
            purge_every: Duration::from_secs(60),
            request_rate: 50.0,
            request_burst: 100.0,
            auth_rate: 2.0,
            auth_burst: 20.0,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// The largest frame accepted from a connection logged in or not (never more before
    /// login than after).
    pub fn frame_limit(&self, logged_in: bool) -> usize {
        if logged_in {
            self.max_frame
        } else {
            self.max_frame_before_login.min(self.max_frame)
        }
    }

    /// A config for tests: a fresh database at `db_path`, cheap hashing, default limits
    /// but for the rate limits and the connections per address, which are out of the
    /// way (every test connects from 127.0.0.1; tests that check them set them).
    pub fn for_tests(db_path: impl Into<PathBuf>) -> Config {
        Config {
            db: Db::Sqlite(db_path.into()),
            durability: Durability::Normal,
            hash_cost: HashCost::TEST,
            request_rate: 1e9,
            request_burst: 1e9,
            auth_rate: 1e9,
            auth_burst: 1e9,
            max_connections_per_address: 100_000,
            ..Config::default()
        }
    }
}
