//! The integration tests of `tests/server/` again, on PostgreSQL: each test gets a schema
//! of its own in the database of `CHATD_TEST_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`), dropped when it ends.
//!
//! `store` tests the store alone: two nodes on one database, PostgreSQL down or hung.
//!
//! Without that variable, or without a PostgreSQL there, this binary prints one line
//! saying why and runs nothing; with `CHATD_TEST_REQUIRE_SERVICES=1` (as CI sets) that
//! fails instead.
#![allow(clippy::unwrap_used)]

#[path = "server/admin.rs"]
mod admin;
#[path = "server/basics.rs"]
mod basics;
#[path = "server/classic.rs"]
mod classic;
#[path = "server/conversations.rs"]
mod conversations;
#[path = "server/errors.rs"]
mod errors;
#[path = "server/friends.rs"]
mod friends;
#[path = "server/groups.rs"]
mod groups;
#[path = "server/http.rs"]
mod http;
#[path = "server/invites.rs"]
mod invites;
#[path = "server/limits.rs"]
mod limits;
#[path = "server/messages.rs"]
mod messages;
#[path = "server/migrate.rs"]
mod migrate;
#[path = "server/names.rs"]
mod names;
#[path = "server/paging.rs"]
mod paging;
#[path = "server/proxy.rs"]
mod proxy;
#[path = "server/sessions.rs"]
mod sessions;
#[path = "server_pg/store.rs"]
mod store;
#[path = "server/util.rs"]
mod util;
#[path = "server/ws.rs"]
mod ws;

/// The store every test of this binary runs on.
const STORE: util::StoreKind = util::StoreKind::Postgres;
