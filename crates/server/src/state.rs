//! The server's shared state, built once in [`crate::server::run`] and handed to every
//! session: no globals.

use std::sync::Arc;

use crate::bus::Bus;
use crate::config::Config;
use crate::hub::Hub;
use crate::limits::AddressLimits;
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
}
