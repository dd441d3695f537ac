//! Logging a process's share of the users in, many at a time.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cli::Common;
use crate::conn::Endpoints;
use crate::coord::{Coord, Counters};
use crate::users::{self, LoginCounts, Session, SetupError, TokenCache};

/// The users of one process, logged in.
#[derive(Debug, Default)]
pub struct Setup {
    /// Per local user (global index `range.start + i`): its session, or nothing when it
    /// failed.
    pub sessions: Vec<Option<Session>>,
    /// Seconds until the last user was logged in and synced.
    pub login_secs: f64,
    /// Failures by reason.
    pub errors: BTreeMap<String, u64>,
    pub logins_token: u64,
    pub logins_password: u64,
    pub registered: u64,
    /// Messages left pending from earlier runs, received while syncing.
    pub stray: u64,
}

/// How often users logged in early are pinged while the others are still logging in: a
/// long set-up must not let the server close them as idle (its default idle timeout is
/// 90 s).
const KEEPALIVE: Duration = Duration::from_secs(30);

impl Setup {
    /// Pings every session logged in so far, without waiting (a ping that cannot be
    /// written now is written by the scenario's next flush; the replies are control
    /// replies, which every scenario skips).
    fn ping_all(&mut self) {
        for session in self.sessions.iter_mut().flatten() {
            crate::wire::push_ping(&mut session.conn.wbuf, crate::wire::CONTROL_RID);
            let _ = session.conn.flush();
        }
    }

    /// A record for `scenario` over `users` users, with this set-up's counts filled in.
    pub fn record(&self, scenario: &str, users: u64) -> crate::record::Record {
        crate::record::Record {
            scenario: scenario.into(),
            procs: 1,
            users,
            logged_in: self.logged_in(),
            login_secs: self.login_secs,
            logins_token: self.logins_token,
            logins_password: self.logins_password,
            registered: self.registered,
            setup_errors: self.errors.clone(),
            stray: self.stray,
            ..crate::record::Record::default()
        }
    }

    pub fn logged_in(&self) -> u64 {
        self.sessions.iter().filter(|s| s.is_some()).count() as u64
    }
}

/// Everything needed to set users up.
#[derive(Clone)]
pub struct Env {
    pub ends: Endpoints,
    pub cache: Arc<TokenCache>,
    pub prefix: String,
    pub timeout: Duration,
    pub concurrency: usize,
}

impl Env {
    /// The environment of a scenario from its common settings.
    pub fn new(common: &Common, scenario: &str) -> anyhow::Result<Env> {
        let prefix = common.prefix_or(scenario).to_string();
        anyhow::ensure!(
            !prefix.is_empty()
                && prefix.len() <= 16
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "--prefix must be 1 to 16 characters of letters, digits, '-' and '_'"
        );
        let mut ends = Endpoints::new(&common.addrs, common.sources)?;
        if common.tls {
            ends = ends.with_tls(common.ca.as_deref())?;
        }
        let cache_path = if common.no_token_cache {
            None
        } else {
            Some(
                common
                    .token_cache
                    .clone()
                    .unwrap_or_else(|| users::default_cache_path(&common.addrs[0], &prefix)),
            )
        };
        Ok(Env {
            ends,
            cache: Arc::new(TokenCache::load(cache_path.as_deref())),
            prefix,
            timeout: Duration::from_secs_f64(common.setup_timeout.max(0.1)),
            concurrency: common.login_concurrency.max(1),
        })
    }

    /// Connects user `i` (a global index) and logs it in.
    pub async fn log_in_one(
        &self,
        i: u64,
        counts: &LoginCounts,
        counters: &Counters,
        group: Option<i64>,
    ) -> Result<Session, SetupError> {
        let name = users::user_name(&self.prefix, i);
        let work = async {
            let conn = self.ends.connect(i).await?;
            Counters::bump(&counters.connected);
            let mut session = users::log_in(conn, &name, &self.cache, counts).await?;
            if let Some(group) = group {
                if !session.groups.contains(&group) {
                    users::join_group(&mut session.conn, group).await?;
                }
            }
            Ok(session)
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(SetupError::Timeout),
        }
    }

    /// Logs in users `range` (global indexes), `concurrency` at a time; joins them to
    /// `group` when given.
    pub async fn log_in_all(&self, range: Range<u64>, coord: &Coord, group: Option<i64>) -> Setup {
        let start = Instant::now();
        let counts = Arc::new(LoginCounts::default());
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = JoinSet::new();
        for i in range.clone() {
            let env = self.clone();
            let counts = counts.clone();
            let counters = coord.counters.clone();
            let permits = permits.clone();
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let result = env.log_in_one(i, &counts, &counters, group).await;
                if result.is_ok() {
                    Counters::bump(&counters.logged_in);
                }
                (i, result, start.elapsed())
            });
        }
        let mut setup = Setup {
            sessions: (0..range.end - range.start).map(|_| None).collect(),
            ..Setup::default()
        };
        let mut last = Duration::ZERO;
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.tick().await; // The first tick is now.
        loop {
            let joined = tokio::select! {
                joined = tasks.join_next() => joined,
                _ = keepalive.tick() => {
                    setup.ping_all();
                    continue;
                }
            };
            let Some(joined) = joined else { break };
            let Ok((i, result, at)) = joined else {
                *setup.errors.entry("panic".into()).or_default() += 1;
                continue;
            };
            match result {
                Ok(session) => {
                    last = last.max(at);
                    setup.stray += session.pending;
                    setup.sessions[(i - range.start) as usize] = Some(session);
                }
                Err(e) => {
                    *setup.errors.entry(e.key()).or_default() += 1;
                }
            }
        }
        setup.login_secs = last.as_secs_f64();
        (setup.logins_token, setup.logins_password, setup.registered) = counts.get();
        if let Err(e) = self.cache.flush() {
            eprintln!("chat-bench: could not write the token cache: {e}");
        }
        setup
    }
}
