//! Integration tests of chatd: each test starts the real server (`chat_server::run`) on
//! 127.0.0.1:0 with a fresh SQLite store and talks to it over TCP, mostly with raw JSON
//! lines ([`util::Conn`]), once through the client library. `tests/server_pg.rs` runs
//! the same modules on PostgreSQL.
//!
//! - `admin`: admin ops and rights, mutes, broadcast, shutdown, group_kick, expiry.
//! - `basics`: ping, echo, register, login (name, id, token), logout, whoami, users, rids.
//! - `classic`: the classic muduo `msgid` protocol, and chat between its clients and native ones.
//! - `conversations`: seqs per conversation, cursors, unread, receipts, typing, cmid, sync.
//! - `errors`: malformed input, bad fields, limits, `too_large`, framing.
//! - `friends`: friend requests, acceptance, declines, blocks, presence.
//! - `messages`: one-to-one messages, pending delivery, acks, history.
//! - `groups`: create, join, leave, delete, members, group messages and history.
//! - `http`: /metrics, /healthz, /readyz.
//! - `invites`: closed groups, invitations, group admins, removals, shared history.
//! - `names`: look-alike and invisible names, `--admins` bound to existing accounts.
//! - `paging`: big groups' members and long friend lists in pages; a small login reply.
//! - `limits`: overload protection: connection limits (total, per address), request and
//!   login rate limits, the frame limit before login.
//! - `proxy`: the PROXY protocol: limits keyed on the client a trusted proxy names.
//! - `ws`: the protocol over WebSocket, chat with TCP clients, limits, the Origin check.
//! - `sessions`: second login, login and idle timeouts, shutdown, restart.
#![allow(clippy::unwrap_used)]

mod admin;
mod basics;
mod classic;
mod conversations;
mod errors;
mod friends;
mod groups;
mod http;
mod invites;
mod limits;
mod messages;
mod migrate;
mod names;
mod paging;
mod proxy;
mod sessions;
mod util;
mod ws;

/// The store every test of this binary runs on.
const STORE: util::StoreKind = util::StoreKind::Sqlite;
