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

/// Everything a server needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The SQLite database file; created and migrated on first start.
    pub db_path: PathBuf,
    pub durability: Durability,
    /// A connection that has not logged in by then is closed.
    pub login_timeout: Duration,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// The largest frame accepted, in bytes.
    pub max_frame: usize,
    /// The longest message text, in characters.
    pub max_text: usize,
    /// How long a session token stays valid.
    pub token_ttl: Duration,
    pub hash_cost: HashCost,
    /// How many events may wait for one session before it counts as lagging behind.
    pub outbound_queue: usize,
    /// How long shutdown waits for sessions to finish what is in flight.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            db_path: PathBuf::from("chatd.db"),
            durability: Durability::Full,
            login_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_frame: 64 * 1024,
            max_text: 4096,
            token_ttl: Duration::from_secs(30 * 24 * 3600),
            hash_cost: HashCost::default(),
            outbound_queue: 4096,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// A config for tests: a fresh database at `db_path`, cheap hashing, default limits.
    pub fn for_tests(db_path: impl Into<PathBuf>) -> Config {
        Config {
            db_path: db_path.into(),
            durability: Durability::Normal,
            hash_cost: HashCost::TEST,
            ..Config::default()
        }
    }
}
