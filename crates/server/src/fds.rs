//! File descriptors: every connection is one, and when the process runs out, `accept`
//! fails and new connections wait in the kernel's queue without a word. So the server
//! raises its soft open-files limit to the hard one at start, and serves at most as many
//! connections as that limit leaves room for after a reserve (the store's files and
//! connections, Redis, the listener, logs, the short-lived sockets of refusals): a
//! newcomer past that gets `server_full` instead of silence.

/// Descriptors kept for everything that is not a client connection: SQLite's database,
/// WAL and shared-memory files for the writer and each reader, PostgreSQL's pool, Redis
/// connections, the listener, standard streams, TLS files, and the connections being
/// refused with `server_full` ([`REFUSING`] at most).
pub const RESERVED: u64 = 256;

/// How many refusals (`server_full`, `too_many_connections`) may be in flight at once;
/// past that a newcomer is closed without a word rather than take more descriptors.
pub const REFUSING: usize = 64;

/// Raises the soft open-files limit to the hard one, as far as the system lets it, and
/// returns the soft limit in force (`None` where it cannot be read).
pub fn raise_open_files_limit() -> Option<u64> {
    match rlimit::Resource::NOFILE.get() {
        Ok((soft, hard)) if soft < hard => match rlimit::increase_nofile_limit(hard) {
            Ok(now) => Some(now),
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-files limit");
                Some(soft)
            }
        },
        Ok((soft, _)) => Some(soft),
        Err(_) => None,
    }
}

/// The open-files soft limit in force, if it can be read.
pub fn open_files_limit() -> Option<u64> {
    rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
}

/// How many connections can be served with `open_files` descriptors: `wanted`, or less
/// when the limit leaves less room after [`RESERVED`] (but always a few).
pub fn clamp_connections(wanted: usize, open_files: Option<u64>) -> usize {
    match open_files {
        None => wanted,
        Some(limit) => {
            let room = limit.saturating_sub(RESERVED).max(16);
            usize::try_from(room).map_or(wanted, |room| wanted.min(room))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_in_the_open_files_limit() {
        assert_eq!(clamp_connections(100_000, Some(20_000)), 20_000 - 256);
        assert_eq!(clamp_connections(1_000, Some(20_000)), 1_000);
        assert_eq!(clamp_connections(100_000, Some(1_024)), 1_024 - 256);
        // A tiny limit still serves a few (and the reserve shrinks to what is left).
        assert_eq!(clamp_connections(100_000, Some(100)), 16);
        assert_eq!(clamp_connections(100_000, None), 100_000);
        assert_eq!(clamp_connections(5, Some(u64::MAX)), 5);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let after = raise_open_files_limit();
        if let Ok((soft, hard)) = rlimit::Resource::NOFILE.get() {
            assert_eq!(after, Some(soft));
            // Raised, unless the system refused (then it is still what it was).
            assert!(soft <= hard);
        }
    }
}
