//! The server's shared state, built once in [`crate::server::run`] and handed to every
//! session: no globals.

use std::sync::Arc;

use crate::blocks::Blocks;
use crate::bus::Bus;
use crate::config::Config;
use crate::hub::Hub;
use crate::limits::{AddressLimits, AddressSlots, KeyedLimits};
use crate::mutes::Mutes;
use crate::password::Passwords;
use crate::store::Store;

/// What every session shares.
pub struct Ctx {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub hub: Hub,
    pub passwords: Passwords,
    /// Registrations and password logins by source address.
    pub auth_limits: AddressLimits,
    /// Connections held by source address.
    pub address_slots: Arc<AddressSlots>,
    /// Logins of any kind by account.
    pub login_limits: KeyedLimits<chat_proto::UserId>,
    /// Who is muted, until when.
    pub mutes: Mutes,
    /// Who blocks whom.
    pub blocks: Blocks,
    /// The users `--admins` names, resolved at start: the rights go to accounts that
    /// existed then, never to whoever registers a listed name later.
    pub admins: std::collections::HashSet<chat_proto::UserId>,
    /// What `/metrics` shows.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Asks the server to shut down (the `shutdown` op).
    pub stop: StopSwitch,
    /// Live messages reach this node's sessions in commit order after the login replay
    /// (one node). In a cluster they may be lost or overtaken, and a session checks the
    /// first one of each conversation against the store.
    pub trust_order: bool,
}

/// A shutdown asked for from inside (an admin's `shutdown`), with its grace period.
#[derive(Debug, Default)]
pub struct StopSwitch {
    asked: tokio_util::sync::CancellationToken,
    grace: std::sync::Mutex<Option<std::time::Duration>>,
}

impl StopSwitch {
    /// Asks for a shutdown; `grace` overrides the configured grace period.
    pub fn request(&self, grace: Option<std::time::Duration>) {
        *self.grace.lock().unwrap_or_else(|e| e.into_inner()) = grace;
        self.asked.cancel();
    }

    /// Completes once a shutdown is asked for.
    pub async fn requested(&self) {
        self.asked.cancelled().await;
    }

    /// The grace period the request asked for, if it did.
    pub fn grace(&self) -> Option<std::time::Duration> {
        *self.grace.lock().unwrap_or_else(|e| e.into_inner())
    }
}
