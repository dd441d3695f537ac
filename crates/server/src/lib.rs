//! chatd as a library: an instant-messaging server speaking JSON lines over TCP.
//!
//! `main` parses flags into a [`Config`], binds a listener and calls [`run`]; tests and
//! benchmarks do the same on port 0.
//!
//! - [`server`]: the accept loop and the shutdown sequence.
//! - [`accept`]: a connection before its session: PROXY header, per-address cap, TLS,
//!   protocol sniffing, the frame limit before login.
//! - [`proxy`]: the PROXY protocol (v1, v2) from trusted balancers.
//! - [`fds`]: the open-files limit, and how many connections fit in it.
//! - [`session`]: one connection's loop: frames in, replies and events out.
//! - [`dialect`]: how a session's frames are spelled on the wire (one loop, many protocols).
//! - [`classic`]: the classic muduo chat server's JSON `msgid` protocol, as a dialect.
//! - [`ops`]: one function per op of the protocol.
//! - [`hub`]: who is online on this node, and each session's delivery queue.
//! - [`bus`]: delivery to online users behind one interface (in-process for now).
//! - [`dispatch`]: turns committed messages into deliveries, in commit order.
//! - [`cluster`]: a node of a cluster (PostgreSQL store, Redis between nodes).
//! - [`store`]: storage behind one interface; SQLite is the embedded implementation.
//! - [`limits`]: rate limits, per connection and per source address; connections per address.
//! - [`mutes`]: who is muted, checked on every send without a read.
//! - [`blocks`]: who blocks whom, checked on every one-to-one send without a read.
//! - [`password`]: argon2id hashing and session tokens.
//! - [`tls`]: TLS on the listener (rustls).
//! - [`config`], [`error`], [`state`]: settings, op errors, shared state.

pub(crate) mod accept;
pub mod blocks;
pub mod bus;
pub(crate) mod classic;
pub mod cluster;
pub mod config;
mod delivered;
pub(crate) mod dialect;
pub mod dispatch;
pub mod error;
pub mod fds;
pub(crate) mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod mutes;
pub mod names;
pub(crate) mod ops;
pub mod password;
pub mod proxy;
pub mod server;
pub(crate) mod session;
pub mod state;
pub mod store;
pub mod tls;

pub use config::{Cluster, Config, Db, Durability, HashCost};
pub use server::{open_store, run, run_with_http};

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid setting: {0}")]
    Config(String),
    #[error("store: {0}")]
    Store(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
