//! Helpers shared by the integration tests: a real server on port 0 with a fresh store
//! ([`TestServer`]) and a raw JSON-lines connection to it ([`Conn`]).
//!
//! The store is the binary's `crate::STORE`: a SQLite file in a temporary directory, or a
//! schema of its own in the PostgreSQL database of `CHATD_TEST_POSTGRES_URL`, dropped when
//! the test ends ([`PgSchema`]).
//!
//! Nothing here sleeps to wait for something: every wait reads from the socket until the
//! expected frame arrives, under a generous [`WAIT`] so that a bug fails the test instead
//! of hanging it.

use std::collections::VecDeque;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The longest any test waits for one frame, a close or a server to stop.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// The password every test user gets unless a test says otherwise.
pub(crate) const PASSWORD: &str = "secret-pw";

/// Which store a test binary runs its tests on (each binary names one: the other
/// variant is never built there).
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreKind {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh schema in the database of `CHATD_TEST_POSTGRES_URL`.
    Postgres,
}

/// A running `chat_server::run` on 127.0.0.1:0 over a fresh store.
pub(crate) struct TestServer {
    /// Keeps the store's directory alive across restarts.
    _dir: tempfile::TempDir,
    /// The PostgreSQL schema, kept across restarts and dropped with the server.
    _schema: Option<PgSchema>,
    config: chat_server::Config,
    /// The users `--admins` names, registered before the server started with them (it
    /// refuses names no user has): `register` hands out their ids.
    admins: Vec<(String, i64)>,
    addr: SocketAddr,
    /// The HTTP endpoints' address, for a server started with them.
    http: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), chat_server::ServerError>>>,
}

impl TestServer {
    /// A server with the test defaults (cheap hashing, the default limits).
    pub(crate) async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// A server whose config `tweak` adjusts first (short timeouts, small limits).
    pub(crate) async fn start_with(tweak: impl FnOnce(&mut chat_server::Config)) -> TestServer {
        TestServer::start_full(tweak, false).await
    }

    /// A server with the test defaults and its HTTP endpoints (see [`TestServer::http`]).
    pub(crate) async fn start_with_http() -> TestServer {
        TestServer::start_full(|_| {}, true).await
    }

    /// [`TestServer::start_with_http`] with a config `tweak`.
    pub(crate) async fn start_with_http_and(
        tweak: impl FnOnce(&mut chat_server::Config),
    ) -> TestServer {
        TestServer::start_full(tweak, true).await
    }

    /// The HTTP endpoints' address.
    pub(crate) fn http_addr(&self) -> SocketAddr {
        self.http.expect("a server started with its HTTP endpoints")
    }

    async fn start_full(
        tweak: impl FnOnce(&mut chat_server::Config),
        with_http: bool,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = chat_server::Config::for_tests(dir.path().join("chat.db"));
        let schema = match crate::STORE {
            StoreKind::Sqlite => None,
            StoreKind::Postgres => {
                let schema = PgSchema::create().await;
                config.db = chat_server::Db::Postgres(schema.url.clone());
                Some(schema)
            }
        };
        tweak(&mut config);
        let mut admins = Vec::new();
        if !config.admins.is_empty() {
            let mut first = config.clone();
            first.admins.clear();
            let (addr, _, stop, task) = spawn(first, false).await;
            for name in &config.admins {
                let id = Conn::connect(addr).await.register(name, PASSWORD).await;
                admins.push((name.clone(), id));
            }
            let _ = stop.send(());
            let stopped = tokio::time::timeout(WAIT, task).await;
            assert!(
                matches!(stopped, Ok(Ok(Ok(())))),
                "the first server did not stop: {stopped:?}"
            );
        }
        let (addr, http, stop, task) = spawn(config.clone(), with_http).await;
        TestServer {
            _dir: dir,
            _schema: schema,
            config,
            admins,
            addr,
            http,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `GET path` from the HTTP endpoints: the status code and the body.
    pub(crate) async fn http_get(&self, path: &str) -> (u16, String) {
        let addr = self.http_addr();
        let mut stream = TcpStream::connect(addr).await.expect("connect to http");
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write request");
        let mut response = Vec::new();
        tokio::time::timeout(
            WAIT,
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut response),
        )
        .await
        .expect("no http response in time")
        .expect("read response");
        let response = String::from_utf8(response).expect("utf-8 response");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {response}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// Signals shutdown and waits for `run` to return, which must be `Ok`.
    pub(crate) async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(WAIT, task)
                .await
                .expect("server did not stop in time")
                .expect("server task panicked");
            if let Err(e) = result {
                panic!("run returned an error: {e}");
            }
        }
    }

    /// Stops the server and starts a new one on the same store (on a new port).
    pub(crate) async fn restart(&mut self) {
        self.stop().await;
        let (addr, _, stop, task) = spawn(self.config.clone(), false).await;
        self.addr = addr;
        self.stop = Some(stop);
        self.task = Some(task);
    }

    /// A new raw connection.
    pub(crate) async fn connect(&self) -> Conn {
        Conn::connect(self.addr).await
    }

    /// Registers `name` (password [`PASSWORD`]) on a new connection; returns the
    /// connection, not logged in, and the new user's id.
    pub(crate) async fn register(&self, name: &str) -> (Conn, i64) {
        let mut conn = self.connect().await;
        if let Some((_, id)) = self.admins.iter().find(|(admin, _)| admin == name) {
            return (conn, *id);
        }
        let id = conn.register(name, PASSWORD).await;
        (conn, id)
    }

    /// Registers `name` and logs it in on a new connection, up to `synced`.
    pub(crate) async fn user(&self, name: &str) -> (Conn, i64) {
        let (mut conn, id) = self.register(name).await;
        conn.login_name(name, PASSWORD).await;
        (conn, id)
    }
}

/// A schema of its own for one test in the database of `CHATD_TEST_POSTGRES_URL`; the
/// server's connections use it through the `options` of [`PgSchema::url`]. Dropping it
/// ends the server's sessions on it and drops the schema with everything in it.
pub(crate) struct PgSchema {
    /// The database URL as given.
    pub(crate) base: String,
    /// `t_` and 16 random hex digits.
    pub(crate) name: String,
    /// `base` with `search_path` set to the schema, and the schema as application name.
    pub(crate) url: String,
}

impl PgSchema {
    /// Creates the schema, or skips the test binary (or fails the test, when
    /// `CHATD_TEST_REQUIRE_SERVICES=1`) if there is no PostgreSQL to create it in.
    pub(crate) async fn create() -> PgSchema {
        let base = match std::env::var("CHATD_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => skip("CHATD_TEST_POSTGRES_URL not set"),
        };
        let name = format!("t_{:016x}", rand::random::<u64>());
        if let Err(e) = pg_exec(&base, &format!("CREATE SCHEMA {name}")).await {
            skip(&format!(
                "PostgreSQL at CHATD_TEST_POSTGRES_URL cannot be reached: {e}"
            ));
        }
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{name}&application_name={name}");
        PgSchema { base, name, url }
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        // The test's runtime may be the one being dropped: run the clean-up on a thread of
        // its own with a runtime of its own, and wait for it.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(pg_exec(
                &base,
                &format!(
                    "SET lock_timeout = '10s'; \
                     SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = '{name}' AND pid <> pg_backend_pid(); \
                     DROP SCHEMA {name} CASCADE"
                ),
            ))
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test schema {}: {e}", self.name),
            Err(_) => eprintln!(
                "could not drop test schema {}: clean-up panicked",
                self.name
            ),
        }
    }
}

/// Runs `sql` (simple protocol, several statements allowed) on a new connection to `url`.
pub(crate) async fn pg_exec(url: &str, sql: &str) -> Result<(), String> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    config.connect_timeout(Duration::from_secs(3));
    let (client, connection) = tokio::time::timeout(WAIT, config.connect(tokio_postgres::NoTls))
        .await
        .map_err(|_| "connecting timed out".to_string())?
        .map_err(|e| match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        })?;
    let connection = tokio::spawn(connection);
    let result = tokio::time::timeout(WAIT, client.batch_execute(sql))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string());
    drop(client);
    let _ = connection.await;
    result
}

/// A test that needs a service that is not there: fails it under
/// `CHATD_TEST_REQUIRE_SERVICES=1` (as CI runs), or else says why on one line and ends the
/// whole test binary successfully. (libtest cannot mark a running test skipped, and the
/// tests shared with the SQLite binary cannot return early from here; every test of this
/// binary needs the same service, so none of them could run.)
fn skip(why: &str) -> ! {
    if std::env::var("CHATD_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("CHATD_TEST_REQUIRE_SERVICES=1 but {why}");
    }
    // Many tests get here at once: one says why, the others wait for the exit.
    static SKIPPING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = SKIPPING.lock();
    // Straight to the file descriptor: libtest captures print! in tests.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "skipped: {why}");
    let _ = out.flush();
    std::process::exit(0);
}

async fn spawn(
    config: chat_server::Config,
    with_http: bool,
) -> (
    SocketAddr,
    Option<SocketAddr>,
    oneshot::Sender<()>,
    JoinHandle<Result<(), chat_server::ServerError>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let http = if with_http {
        Some(TcpListener::bind("127.0.0.1:0").await.expect("bind http"))
    } else {
        None
    };
    let http_addr = http.as_ref().map(|l| l.local_addr().expect("http addr"));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(chat_server::run_with_http(
        listener,
        http,
        config,
        async move {
            let _ = stop_rx.await;
        },
    ));
    (addr, http_addr, stop_tx, task)
}

/// One frame read from a connection: its JSON, or the end of the connection.
#[derive(Debug)]
enum Read {
    Frame(Value),
    Closed,
}

/// A raw connection speaking JSON lines. Replies are matched by rid; events that arrive
/// meanwhile are kept, in order, for [`Conn::next_event`].
pub(crate) struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Events read while waiting for something else, oldest first.
    events: VecDeque<Value>,
    /// Replies read while waiting for another rid.
    replies: Vec<Value>,
    next_rid: u64,
    closed: bool,
}

impl Conn {
    pub(crate) async fn connect(addr: SocketAddr) -> Conn {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        Conn::from_stream(stream)
    }

    /// A connection over a stream the test opened (from another address, say).
    pub(crate) fn from_stream(stream: TcpStream) -> Conn {
        stream.set_nodelay(true).expect("nodelay");
        let (read, write) = stream.into_split();
        Conn {
            reader: BufReader::new(read),
            writer: write,
            events: VecDeque::new(),
            replies: Vec::new(),
            next_rid: 1,
            closed: false,
        }
    }

    /// Writes bytes as they are.
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
        self.writer.flush().await.expect("flush");
    }

    /// Writes one JSON frame and its `\n`.
    pub(crate) async fn send(&mut self, frame: &Value) {
        let mut line = serde_json::to_vec(frame).expect("json");
        line.push(b'\n');
        self.send_raw(&line).await;
    }

    /// Reads one line, or notices the end of the connection (a reset counts as an end).
    async fn read(&mut self) -> Read {
        if self.closed {
            return Read::Closed;
        }
        let mut line = Vec::new();
        let n = tokio::time::timeout(WAIT, self.reader.read_until(b'\n', &mut line))
            .await
            .expect("timed out waiting for a frame from the server");
        match n {
            Ok(0) | Err(_) => {
                self.closed = true;
                Read::Closed
            }
            Ok(_) if line.last() != Some(&b'\n') => {
                // A last line without its end: the server closed mid-frame.
                self.closed = true;
                Read::Closed
            }
            Ok(_) => {
                let value: Value = serde_json::from_slice(&line).unwrap_or_else(|e| {
                    panic!(
                        "server sent a line that is not JSON ({e}): {:?}",
                        String::from_utf8_lossy(&line)
                    )
                });
                assert!(value.is_object(), "server sent a non-object: {value}");
                Read::Frame(value)
            }
        }
    }

    /// Keeps an event or a reply that was read while waiting for something else.
    fn stash(&mut self, frame: Value) {
        if frame.get("event").is_some() {
            assert!(
                frame.get("ok").is_none() && frame.get("rid").is_none(),
                "an event carries ok or rid: {frame}"
            );
            self.events.push_back(frame);
        } else {
            assert!(
                frame.get("rid").is_some() && frame["ok"].is_boolean(),
                "a reply lacks rid or ok: {frame}"
            );
            self.replies.push(frame);
        }
    }

    /// Waits for the reply whose rid is `rid`, keeping every event that comes first.
    pub(crate) async fn reply_for(&mut self, rid: &Value) -> Value {
        loop {
            if let Some(at) = self.replies.iter().position(|r| &r["rid"] == rid) {
                return self.replies.remove(at);
            }
            match self.read().await {
                Read::Frame(frame) => self.stash(frame),
                Read::Closed => panic!(
                    "connection closed while waiting for reply rid {rid}; events before: {:?}",
                    self.events
                ),
            }
        }
    }

    /// Sends a request and returns its reply. A request without `rid` gets a fresh
    /// numeric one; a request with `"rid": null` is sent as it is.
    pub(crate) async fn request(&mut self, mut req: Value) -> Value {
        let rid = match req.get("rid") {
            Some(rid) => rid.clone(),
            None => {
                let rid = json!(self.next_rid);
                self.next_rid += 1;
                req["rid"] = rid.clone();
                rid
            }
        };
        self.send(&req).await;
        self.reply_for(&rid).await
    }

    /// Sends a request that must succeed; returns the reply.
    pub(crate) async fn ok(&mut self, req: Value) -> Value {
        let shown = req.to_string();
        let reply = self.request(req).await;
        assert_eq!(reply["ok"], true, "request {shown} failed: {reply}");
        assert!(reply.get("error").is_none(), "ok reply has error: {reply}");
        reply
    }

    /// Sends a request that must fail; returns the error code.
    pub(crate) async fn err(&mut self, req: Value) -> String {
        let shown = req.to_string();
        let reply = self.request(req).await;
        error_code(&reply).unwrap_or_else(|| panic!("request {shown} did not fail: {reply}"))
    }

    /// Sends a request that must fail with `code`.
    pub(crate) async fn expect_err(&mut self, req: Value, code: &str) {
        let shown = req.to_string();
        let got = self.err(req).await;
        assert_eq!(got, code, "wrong error code for {shown}");
    }

    /// Sends a request that must get the plain refusal a block gives: `forbidden`,
    /// "refused", and nothing that says why.
    pub(crate) async fn expect_refused(&mut self, req: Value) {
        let shown = req.to_string();
        let reply = self.request(req).await;
        assert_eq!(
            reply["error"],
            json!({"code": "forbidden", "message": "refused"}),
            "{shown} was not refused: {reply}"
        );
    }

    /// The next event, waiting for it if none has arrived yet.
    pub(crate) async fn next_event(&mut self) -> Value {
        loop {
            if let Some(event) = self.events.pop_front() {
                return event;
            }
            match self.read().await {
                Read::Frame(frame) => self.stash(frame),
                Read::Closed => panic!("connection closed while waiting for an event"),
            }
        }
    }

    /// Skips events until one named `name` comes, and returns it.
    pub(crate) async fn wait_event(&mut self, name: &str) -> Value {
        loop {
            let event = self.next_event().await;
            if event["event"] == name {
                return event;
            }
        }
    }

    /// Events that have arrived and not been taken yet (without reading the socket).
    pub(crate) fn buffered_events(&self) -> Vec<Value> {
        self.events.iter().cloned().collect()
    }

    /// Reads until the server closes the connection; returns every event and reply that
    /// came before the end (events not taken yet included).
    pub(crate) async fn expect_closed(&mut self) -> Vec<Value> {
        let mut frames: Vec<Value> = self.events.drain(..).collect();
        frames.append(&mut self.replies);
        loop {
            match self.read().await {
                Read::Frame(frame) => frames.push(frame),
                Read::Closed => return frames,
            }
        }
    }

    /// Waits for `kicked` with `reason`, then for the server to close the connection.
    pub(crate) async fn expect_kicked(&mut self, reason: &str) {
        let frames = self.expect_closed().await;
        let kicked: Vec<&Value> = frames.iter().filter(|f| f["event"] == "kicked").collect();
        assert_eq!(
            kicked.len(),
            1,
            "expected one kicked event before the close, got {frames:?}"
        );
        assert_eq!(kicked[0]["reason"], reason, "{frames:?}");
        assert_eq!(
            frames.last().map(|f| &f["event"]),
            Some(&json!("kicked")),
            "kicked must be the last frame before the close: {frames:?}"
        );
    }

    /// Registers a user; returns its id.
    pub(crate) async fn register(&mut self, name: &str, password: &str) -> i64 {
        let reply = self
            .ok(json!({"op": "register", "name": name, "password": password}))
            .await;
        assert_eq!(reply["user"]["name"], name, "{reply}");
        reply["user"]["id"].as_i64().expect("numeric user id")
    }

    /// Logs in with the given fields; returns the login reply and every message
    /// delivered before `synced`.
    pub(crate) async fn login(&mut self, fields: Value) -> (Value, Vec<Value>) {
        let mut req = json!({"op": "login"});
        for (k, v) in fields.as_object().expect("login fields").iter() {
            req[k] = v.clone();
        }
        let before = self.events.len();
        let reply = self.ok(req).await;
        assert!(
            reply["token"].is_string(),
            "login reply has no token: {reply}"
        );
        let early: Vec<&Value> = self
            .events
            .iter()
            .skip(before)
            .filter(|e| e["event"] == "msg" || e["event"] == "synced")
            .collect();
        assert!(
            early.is_empty(),
            "pending messages and synced must come after the login reply: {early:?}"
        );
        let mut pending = Vec::new();
        loop {
            let event = self.next_event().await;
            match event["event"].as_str() {
                Some("synced") => return (reply, pending),
                Some("msg") => pending.push(event),
                // Presence and other events may interleave; they are not pending messages.
                _ => {}
            }
        }
    }

    /// Logs in by name with [`PASSWORD`], up to `synced`; returns the reply.
    pub(crate) async fn login_name(&mut self, name: &str, password: &str) -> Value {
        self.login(json!({"name": name, "password": password}))
            .await
            .0
    }

    /// Sends a one-to-one message; returns `msg: {id, ts}` of the reply.
    pub(crate) async fn send_msg(&mut self, to: i64, text: &str) -> Value {
        let reply = self.ok(json!({"op": "send", "to": to, "text": text})).await;
        assert!(reply["msg"]["id"].is_i64(), "{reply}");
        assert!(reply["msg"]["ts"].is_i64(), "{reply}");
        reply["msg"].clone()
    }

    /// Sends a group message; returns `msg: {id, ts}` of the reply.
    pub(crate) async fn group_send(&mut self, group: i64, text: &str) -> Value {
        let reply = self
            .ok(json!({"op": "group_send", "group": group, "text": text}))
            .await;
        assert!(reply["msg"]["id"].is_i64(), "{reply}");
        reply["msg"].clone()
    }

    /// Creates an open group whose history new members see (what every group was before
    /// groups could be closed); returns its id.
    pub(crate) async fn create_group(&mut self, name: &str) -> i64 {
        self.create_group_with(name, json!({"open": true, "shared_history": true}))
            .await
    }

    /// Creates a group with the given settings (`open`, `shared_history`); returns its id.
    pub(crate) async fn create_group_with(&mut self, name: &str, settings: Value) -> i64 {
        let mut req = json!({"op": "create_group", "name": name, "desc": format!("about {name}")});
        if let (Some(req), Some(settings)) = (req.as_object_mut(), settings.as_object()) {
            req.extend(settings.clone());
        }
        let reply = self.ok(req).await;
        reply["group"]["id"].as_i64().expect("numeric group id")
    }

    /// Waits for the next `msg` event, skipping other events.
    pub(crate) async fn next_msg(&mut self) -> Value {
        self.wait_event("msg").await
    }

    /// Closes the connection at once (no logout).
    pub(crate) fn drop_connection(self) {
        drop(self);
    }
}

/// The error code of a failed reply, `None` for a successful one.
pub(crate) fn error_code(reply: &Value) -> Option<String> {
    if reply["ok"] == true {
        return None;
    }
    assert_eq!(reply["ok"], false, "reply without ok: {reply}");
    assert!(
        reply["error"]["message"].is_string(),
        "error without message: {reply}"
    );
    Some(
        reply["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("error without code: {reply}"))
            .to_string(),
    )
}

/// The ids of the `id` fields of a JSON array, in order.
pub(crate) fn ids(list: &Value) -> Vec<i64> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|v| v["id"].as_i64().unwrap_or_else(|| panic!("no id: {v}")))
        .collect()
}

/// The entry with `id` in a JSON array of objects.
pub(crate) fn find(list: &Value, id: i64) -> Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("no entry with id {id} in {list}"))
        .clone()
}

/// Makes two online users friends: `a` asks, `b` sees the request and accepts, `a` sees
/// `friend_added`.
pub(crate) async fn befriend(a: &mut Conn, a_id: i64, b: &mut Conn, b_id: i64) {
    let reply = a.ok(json!({"op": "add_friend", "id": b_id})).await;
    assert_eq!(reply["requested"], true, "{reply}");
    let request = b.wait_event("friend_request").await;
    assert_eq!(request["from"]["id"], a_id, "{request}");
    let reply = b.ok(json!({"op": "add_friend", "id": a_id})).await;
    assert_eq!(reply["friend"]["id"], a_id, "{reply}");
    let added = a.wait_event("friend_added").await;
    assert_eq!(added["friend"]["id"], b_id, "{added}");
}
