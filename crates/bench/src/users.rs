//! Bench users: `bench-<prefix>-<i>`, registered on first use with a fixed password,
//! logged in by password once and by token after that. Tokens (and group ids) are kept in
//! a cache file so that later runs cost no password hash.
//!
//! The cache is a text file of lines `u <name> <id> <token>` and `g <name> <id>`; later
//! lines win. Every process appends its new lines in one write (`O_APPEND`), so several
//! `--procs` children can share it; [`TokenCache::compact`] rewrites it.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::BytesMut;
use chat_proto::request::{self, Request};
use serde::Deserialize;

use crate::conn::Conn;
use crate::wire::Frame;

/// The password of every bench user.
pub const PASSWORD: &str = "chat-bench-password";

/// The name of bench user `i`.
pub fn user_name(prefix: &str, i: u64) -> String {
    format!("bench-{prefix}-{i}")
}

/// The cache file used when none is given: in the temp dir, keyed by server and prefix.
pub fn default_cache_path(server: &std::net::SocketAddr, prefix: &str) -> PathBuf {
    let server: String = server
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    std::env::temp_dir().join(format!("chat-bench-{server}-{prefix}.tokens"))
}

/// Tokens and group ids from earlier runs, and the lines this run adds.
#[derive(Debug, Default)]
pub struct TokenCache {
    path: Option<PathBuf>,
    users: HashMap<String, (i64, String)>,
    groups: HashMap<String, i64>,
    added: Mutex<String>,
}

impl TokenCache {
    /// Reads the cache at `path` (missing: empty). `None`: a cache that keeps nothing.
    pub fn load(path: Option<&Path>) -> TokenCache {
        let mut cache = TokenCache {
            path: path.map(Path::to_path_buf),
            ..TokenCache::default()
        };
        let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) else {
            return cache;
        };
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            match fields.as_slice() {
                ["u", name, id, token] => {
                    if let Ok(id) = id.parse() {
                        cache
                            .users
                            .insert(name.to_string(), (id, token.to_string()));
                    }
                }
                ["g", name, id] => {
                    if let Ok(id) = id.parse() {
                        cache.groups.insert(name.to_string(), id);
                    }
                }
                _ => {}
            }
        }
        cache
    }

    /// The cached id and token of `name`.
    pub fn token(&self, name: &str) -> Option<&(i64, String)> {
        self.users.get(name)
    }

    /// The cached id of group `name`.
    pub fn group(&self, name: &str) -> Option<i64> {
        self.groups.get(name).copied()
    }

    /// Remembers a fresh token (written at [`TokenCache::flush`]).
    pub fn add_token(&self, name: &str, id: i64, token: &str) {
        if token.is_empty() || token.contains(char::is_whitespace) {
            return;
        }
        let mut added = self.added.lock().unwrap_or_else(|e| e.into_inner());
        added.push_str(&format!("u {name} {id} {token}\n"));
    }

    /// Remembers a group id.
    pub fn add_group(&self, name: &str, id: i64) {
        let mut added = self.added.lock().unwrap_or_else(|e| e.into_inner());
        added.push_str(&format!("g {name} {id}\n"));
    }

    /// Appends what this run learnt to the file, in one write.
    pub fn flush(&self) -> std::io::Result<()> {
        let added = std::mem::take(&mut *self.added.lock().unwrap_or_else(|e| e.into_inner()));
        let Some(path) = &self.path else {
            return Ok(());
        };
        if added.is_empty() {
            return Ok(());
        }
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        file.write_all(added.as_bytes())
    }

    /// Rewrites the file with one line per user and group (only from a single process,
    /// before children start).
    pub fn compact(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut text = String::new();
        for (name, (id, token)) in &self.users {
            text.push_str(&format!("u {name} {id} {token}\n"));
        }
        for (name, id) in &self.groups {
            text.push_str(&format!("g {name} {id}\n"));
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, path)
    }
}

/// How the logins of a run went, by kind.
#[derive(Debug, Default)]
pub struct LoginCounts {
    pub token: AtomicU64,
    pub password: AtomicU64,
    pub registered: AtomicU64,
}

impl LoginCounts {
    /// The counts as plain numbers: (token, password, registered).
    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.token.load(Ordering::Relaxed),
            self.password.load(Ordering::Relaxed),
            self.registered.load(Ordering::Relaxed),
        )
    }
}

/// Why a user could not be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupError {
    /// The server refused a request with this code.
    Server { op: &'static str, code: String },
    /// The connection closed, or the server was kicked us.
    Closed,
    /// Connecting or reading failed.
    Io(String),
    /// The server sent something the bench could not read.
    Protocol(String),
    /// It took longer than the setup timeout.
    Timeout,
}

impl SetupError {
    /// A short key for counting failures by kind.
    pub fn key(&self) -> String {
        match self {
            SetupError::Server { op, code } => format!("{op}:{code}"),
            SetupError::Closed => "closed".into(),
            SetupError::Io(e) => format!("io:{e}"),
            SetupError::Protocol(_) => "protocol".into(),
            SetupError::Timeout => "timeout".into(),
        }
    }
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::Server { op, code } => write!(f, "{op} failed: {code}"),
            SetupError::Closed => f.write_str("connection closed"),
            SetupError::Io(e) => write!(f, "{e}"),
            SetupError::Protocol(e) => write!(f, "unreadable reply: {e}"),
            SetupError::Timeout => f.write_str("timed out"),
        }
    }
}

impl std::error::Error for SetupError {}

impl From<std::io::Error> for SetupError {
    fn from(e: std::io::Error) -> Self {
        SetupError::Io(e.kind().to_string())
    }
}

/// A logged-in, synced connection.
#[derive(Debug)]
pub struct Session {
    pub conn: Conn,
    pub id: i64,
    pub token: String,
    /// The highest message id received while syncing (to ack).
    pub max_msg_id: i64,
    /// Messages received while syncing (left pending by earlier runs).
    pub pending: u64,
    /// The groups the user is in.
    pub groups: Vec<i64>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: i64,
}

#[derive(Deserialize)]
struct LoginLite {
    user: IdOnly,
    token: String,
    #[serde(default)]
    groups: Vec<IdOnly>,
}

#[derive(Deserialize)]
struct GroupLite {
    group: IdOnly,
}

/// Sends `req` with `rid` and reads up to its reply; returns the reply line. Events before
/// it are skipped, except `kicked`.
pub async fn request(conn: &mut Conn, req: &Request, rid: u64) -> Result<BytesMut, SetupError> {
    let mut frame = req.to_json(rid).into_bytes();
    frame.push(b'\n');
    conn.write_now(&frame).await?;
    loop {
        let line = conn.next_line().await?.ok_or(SetupError::Closed)?;
        let Some(parsed) = Frame::parse(&line) else {
            return Err(SetupError::Protocol(
                String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned(),
            ));
        };
        if parsed.event.as_deref() == Some("kicked") {
            return Err(SetupError::Closed);
        }
        if parsed.event.is_some() || parsed.rid != Some(rid) {
            continue;
        }
        if parsed.ok == Some(true) {
            return Ok(line);
        }
        return Err(SetupError::Server {
            op: req.op(),
            code: parsed.error_code().to_string(),
        });
    }
}

/// Logs in with `login` and waits for `synced`.
async fn login(conn: &mut Conn, login: request::Login) -> Result<LoginLite, SetupError> {
    let line = request(conn, &Request::Login(login), 1).await?;
    let reply: LoginLite =
        serde_json::from_slice(&line).map_err(|e| SetupError::Protocol(e.to_string()))?;
    Ok(reply)
}

async fn wait_synced(conn: &mut Conn) -> Result<(i64, u64), SetupError> {
    let (mut max_id, mut pending) = (0, 0);
    loop {
        let line = conn.next_line().await?.ok_or(SetupError::Closed)?;
        let Some(frame) = Frame::parse(&line) else {
            continue;
        };
        match frame.event.as_deref() {
            Some("synced") => return Ok((max_id, pending)),
            Some("kicked") => return Err(SetupError::Closed),
            Some("msg") => {
                max_id = max_id.max(frame.id.unwrap_or(0));
                pending += 1;
            }
            _ => {}
        }
    }
}

/// Logs user `name` in on `conn`: by cached token, else by password after registering it
/// (`conflict`: it exists already). Waits for `synced`.
pub async fn log_in(
    mut conn: Conn,
    name: &str,
    cache: &TokenCache,
    counts: &LoginCounts,
) -> Result<Session, SetupError> {
    let mut reply = None;
    if let Some((_, token)) = cache.token(name) {
        match token_login(&mut conn, token).await {
            Ok(r) => {
                counts.token.fetch_add(1, Ordering::Relaxed);
                reply = Some(r);
            }
            Err(SetupError::Server { code, .. }) if code == "auth_failed" => {}
            Err(e) => return Err(e),
        }
    }
    let reply = match reply {
        Some(r) => r,
        None => {
            let register = Request::Register(request::Register {
                name: name.to_string(),
                password: PASSWORD.to_string(),
            });
            match request(&mut conn, &register, 2).await {
                Ok(_) => {
                    counts.registered.fetch_add(1, Ordering::Relaxed);
                }
                Err(SetupError::Server { code, .. }) if code == "conflict" => {}
                Err(e) => return Err(e),
            }
            let r = login(
                &mut conn,
                request::Login {
                    name: Some(name.to_string()),
                    password: Some(PASSWORD.to_string()),
                    ..Default::default()
                },
            )
            .await?;
            counts.password.fetch_add(1, Ordering::Relaxed);
            cache.add_token(name, r.user.id, &r.token);
            r
        }
    };
    synced_session(conn, reply).await
}

/// Logs in again with a token only (a reconnect), waiting for `synced`.
pub async fn resume(mut conn: Conn, token: &str) -> Result<Session, SetupError> {
    let reply = token_login(&mut conn, token).await?;
    synced_session(conn, reply).await
}

/// Logs in with `token`.
async fn token_login(conn: &mut Conn, token: &str) -> Result<LoginLite, SetupError> {
    let req = request::Login {
        token: Some(token.to_string()),
        ..Default::default()
    };
    login(conn, req).await
}

/// Waits for `synced` after the login `reply`; the session is then ready.
async fn synced_session(mut conn: Conn, reply: LoginLite) -> Result<Session, SetupError> {
    let (max_msg_id, pending) = wait_synced(&mut conn).await?;
    conn.shrink();
    Ok(Session {
        conn,
        id: reply.user.id,
        token: reply.token,
        max_msg_id,
        pending,
        groups: reply.groups.into_iter().map(|g| g.id).collect(),
    })
}

/// Creates an open group (the bench's members join it by id); returns its id.
pub async fn create_group(conn: &mut Conn, name: &str) -> Result<i64, SetupError> {
    let req = Request::CreateGroup(request::CreateGroup {
        name: name.to_string(),
        desc: "chat-bench".to_string(),
        open: true,
        shared_history: false,
    });
    let line = request(conn, &req, 3).await?;
    let reply: GroupLite =
        serde_json::from_slice(&line).map_err(|e| SetupError::Protocol(e.to_string()))?;
    Ok(reply.group.id)
}

/// Joins a group (`conflict`: a member already).
pub async fn join_group(conn: &mut Conn, group: i64) -> Result<(), SetupError> {
    let req = Request::JoinGroup(request::GroupRef { group });
    match request(conn, &req, 4).await {
        Ok(_) => Ok(()),
        Err(SetupError::Server { code, .. }) if code == "conflict" => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keeps_the_latest_lines_and_survives_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "u a 1 old\nnonsense\nu b x tok\ng grp 7\n").unwrap();
        let cache = TokenCache::load(Some(&path));
        cache.add_token("a", 1, "new");
        cache.add_token("c", 3, "has space");
        cache.flush().unwrap();
        let cache = TokenCache::load(Some(&path));
        assert_eq!(cache.token("a"), Some(&(1, "new".to_string())));
        assert_eq!(cache.token("b"), None);
        assert_eq!(cache.token("c"), None);
        assert_eq!(cache.group("grp"), Some(7));
        cache.compact().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
    }
}
