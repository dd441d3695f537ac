//! Real clusters for the tests: `chatd` processes on one PostgreSQL database and one
//! Redis, each test in its own schema and under its own Redis key prefix; nginx in front
//! when a test asks for it.
//!
//! The services come from the environment:
//! - `CHATD_TEST_POSTGRES_URL`, e.g. `postgres://postgres@127.0.0.1:5432/test`;
//! - `CHATD_TEST_REDIS_URL`, e.g. `redis://127.0.0.1:6379`;
//! - `CHATD_TEST_REQUIRE_SERVICES=1` turns a missing or unreachable service (or nginx)
//!   into a failure instead of a skip (CI sets it).
//!
//! Dropping a [`Cluster`] (at the end of a test, or when it panics) kills its processes,
//! drops its schema and deletes its Redis keys.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::conn::Conn;

/// The longest any test waits for one frame or for a process to start.
pub(crate) const WAIT: Duration = Duration::from_secs(10);
/// The longest a test waits for a dead node's users to go offline: the documented bound
/// is the node TTL (10 s) plus a heartbeat (2 s); this is generous on a loaded machine.
pub(crate) const DEAD_NODE_WAIT: Duration = Duration::from_secs(45);
/// How long reaching a service may take before it counts as unreachable.
const REACH: Duration = Duration::from_secs(5);

/// Where the tests find PostgreSQL and Redis.
#[derive(Clone)]
pub(crate) struct Services {
    postgres: String,
    redis: String,
}

fn required() -> bool {
    std::env::var("CHATD_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Skips the test (one line on stderr, past the test harness's capture) or, when
/// services are required, fails it.
fn skip(test: &str, why: &str) {
    assert!(
        !required(),
        "{test}: {why} (CHATD_TEST_REQUIRE_SERVICES=1, so this fails instead of skipping)"
    );
    let _ = writeln!(std::io::stderr(), "skipping cluster test {test}: {why}");
}

impl Services {
    /// Redis's `host:port`.
    pub(crate) fn redis_addr(&self) -> String {
        let rest = self.redis.strip_prefix("redis://").unwrap_or(&self.redis);
        rest.split('/').next().unwrap_or(rest).to_string()
    }

    /// The same services with Redis reached at another URL (through a proxy).
    pub(crate) fn with_redis(&self, url: String) -> Services {
        Services {
            postgres: self.postgres.clone(),
            redis: url,
        }
    }

    /// The services from the environment if both answer; otherwise `None` after saying
    /// why the test is skipped (or a panic when services are required).
    pub(crate) async fn get(test: &str) -> Option<Services> {
        let (Ok(postgres), Ok(redis)) = (
            std::env::var("CHATD_TEST_POSTGRES_URL"),
            std::env::var("CHATD_TEST_REDIS_URL"),
        ) else {
            skip(
                test,
                "set CHATD_TEST_POSTGRES_URL and CHATD_TEST_REDIS_URL to run it",
            );
            return None;
        };
        let services = Services { postgres, redis };
        if let Err(e) = services.psql("SELECT 1").await {
            skip(test, &format!("PostgreSQL at {}: {e}", services.postgres));
            return None;
        }
        if let Err(e) = services.redis_ping().await {
            skip(test, &format!("Redis at {}: {e}", services.redis));
            return None;
        }
        Some(services)
    }

    /// Runs SQL on the test database.
    async fn psql(&self, sql: &str) -> Result<(), String> {
        let connect = tokio_postgres::connect(&self.postgres, tokio_postgres::NoTls);
        let (client, connection) = tokio::time::timeout(REACH, connect)
            .await
            .map_err(|_| "no answer".to_string())?
            .map_err(|e| with_sources(&e))?;
        let driver = tokio::spawn(connection);
        let result = tokio::time::timeout(REACH, client.batch_execute(sql))
            .await
            .map_err(|_| "no answer".to_string())
            .and_then(|r| r.map_err(|e| with_sources(&e)));
        drop(client);
        let _ = driver.await;
        result
    }

    async fn redis(&self) -> Result<redis::aio::MultiplexedConnection, String> {
        let client = redis::Client::open(self.redis.as_str()).map_err(|e| e.to_string())?;
        tokio::time::timeout(REACH, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| "no answer".to_string())?
            .map_err(|e| e.to_string())
    }

    async fn redis_ping(&self) -> Result<(), String> {
        let mut conn = self.redis().await?;
        let pong: String = tokio::time::timeout(REACH, redis::cmd("PING").query_async(&mut conn))
            .await
            .map_err(|_| "no answer".to_string())?
            .map_err(|e| e.to_string())?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(format!("PING answered {pong}"))
        }
    }

    /// Deletes every Redis key under `prefix`.
    async fn redis_clear(&self, prefix: &str) -> Result<(), String> {
        let mut conn = self.redis().await?;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if !keys.is_empty() {
                let _: i64 = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

/// An error with its causes: `error connecting to server: Connection refused`.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// A random lowercase hex string (std's hasher is seeded at random per process and
/// per `RandomState`).
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

/// `url` with `options=-c search_path=SCHEMA` added to its query, and the schema as
/// the application name (so that the clean-up finds the nodes' sessions).
fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}&application_name={schema}")
}

/// One `chatd` process.
struct Node {
    child: Child,
    addr: SocketAddr,
    /// Its HTTP endpoints (`--http`).
    http: SocketAddr,
    /// Kept open: chatd's stdout stays writable for as long as it runs.
    _stdout: ChildStdout,
}

/// Nodes of one test on their own schema and Redis prefix.
pub(crate) struct Cluster {
    services: Services,
    schema: String,
    prefix: String,
    db_url: String,
    /// The nodes' logs, nginx's prefix.
    dir: tempfile::TempDir,
    nodes: Vec<Option<Node>>,
    nginx: Option<Child>,
    /// The nodes' `--auth-rate` and `--auth-burst` (out of the way unless a test sets them).
    auth: (String, String),
}

/// The address nginx connects to the nodes from (`proxy_bind`), the only one the nodes
/// take PROXY protocol headers from: the tests' direct connections to a node come from
/// 127.0.0.1 and send none.
pub(crate) const NGINX_SOURCE: &str = "127.0.0.9";

impl Cluster {
    /// Starts `n` nodes (`n1`, `n2`, ...) at once on a fresh schema and prefix.
    pub(crate) async fn start(services: &Services, n: usize) -> Cluster {
        Cluster::start_with_auth(services, n, 100_000.0, 100_000.0).await
    }

    /// Starts `n` nodes whose limit on registrations and password logins per client
    /// address is `rate` a second, bursts of `burst`.
    pub(crate) async fn start_with_auth(
        services: &Services,
        n: usize,
        rate: f64,
        burst: f64,
    ) -> Cluster {
        let suffix = random_suffix();
        let schema = format!("t_{suffix}");
        services
            .psql(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create schema {schema}: {e}"));
        let mut cluster = Cluster {
            services: services.clone(),
            db_url: with_search_path(&services.postgres, &schema),
            schema,
            prefix: format!("test-{suffix}:"),
            dir: tempfile::tempdir().expect("temp dir"),
            nodes: Vec::new(),
            nginx: None,
            auth: (rate.to_string(), burst.to_string()),
        };
        let starts: Vec<_> = (1..=n).map(|i| cluster.spawn_node(i)).collect();
        for start in starts {
            let node = start.await;
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    /// Starts node `i` and waits for its "chatd listening on ADDR" line.
    fn spawn_node(&self, i: usize) -> impl std::future::Future<Output = Node> {
        let log = self.dir.path().join(format!("n{i}.log"));
        let stderr = std::fs::File::create(&log).expect("node log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_chatd"))
            .args(["--listen", "127.0.0.1:0"])
            .args(["--db", &self.db_url])
            .args(["--redis", &self.services.redis])
            .args(["--redis-prefix", &self.prefix])
            .args(["--node-id", &format!("n{i}")])
            .args(["--hash-memory-kib", "8", "--hash-iterations", "1"])
            .args(["--auth-rate", &self.auth.0, "--auth-burst", &self.auth.1])
            // nginx (deploy/nginx.conf) sends a PROXY protocol header from NGINX_SOURCE.
            .args(["--proxy-protocol", "--proxy-protocol-from", NGINX_SOURCE])
            .args(["--shutdown-grace", "1"])
            // `users` lists everyone online (not only friends): the tests read the
            // presence replica of every node through it.
            .args(["--list-users", "all"])
            .args(["--http", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .env_remove("CHATD_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start chatd");
        let stdout = child.stdout.take().expect("chatd stdout");
        async move {
            let mut lines = BufReader::new(stdout);
            let mut line = String::new();
            let read = tokio::time::timeout(WAIT, lines.read_line(&mut line)).await;
            let addr = match read {
                Ok(Ok(n)) if n > 0 => line
                    .trim()
                    .strip_prefix("chatd listening on ")
                    .and_then(|a| a.parse().ok()),
                _ => None,
            };
            let Some(addr) = addr else {
                panic!(
                    "node n{i} did not start (stdout {line:?}); its log:\n{}",
                    read_log(&log)
                );
            };
            // The HTTP endpoints' line follows.
            let mut line = String::new();
            let read = tokio::time::timeout(WAIT, lines.read_line(&mut line)).await;
            let http = match read {
                Ok(Ok(n)) if n > 0 => line
                    .trim()
                    .strip_prefix("chatd http on ")
                    .and_then(|a| a.parse().ok()),
                _ => None,
            };
            let Some(http) = http else {
                panic!("node n{i} has no HTTP endpoints (stdout {line:?})");
            };
            Node {
                child,
                addr,
                http,
                _stdout: lines.into_inner(),
            }
        }
    }

    /// The HTTP status of `GET path` on node `i`'s endpoints.
    pub(crate) async fn http_status(&self, i: usize, path: &str) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.nodes[i - 1]
            .as_ref()
            .unwrap_or_else(|| panic!("node n{i} was killed"))
            .http;
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to http");
        let request = format!("GET {path} HTTP/1.1\r\nHost: n{i}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
            .await
            .expect("no http response in time")
            .expect("read http response");
        response
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {response}"))
    }

    /// The address of node `i` (from 1).
    pub(crate) fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i - 1]
            .as_ref()
            .unwrap_or_else(|| panic!("node n{i} was killed"))
            .addr
    }

    /// A new connection to node `i`.
    pub(crate) async fn connect(&self, i: usize, label: &str) -> Conn {
        Conn::connect(self.addr(i), &format!("{label}@n{i}")).await
    }

    /// Registers `name` on node `i`; returns the connection (not logged in) and the id.
    pub(crate) async fn register(&self, i: usize, name: &str) -> (Conn, i64) {
        let mut conn = self.connect(i, name).await;
        let id = conn.register(name).await;
        (conn, id)
    }

    /// Registers `name` and logs it in on node `i`.
    pub(crate) async fn user(&self, i: usize, name: &str) -> (Conn, i64) {
        let (mut conn, id) = self.register(i, name).await;
        conn.login(name).await;
        (conn, id)
    }

    /// Makes `name` an admin with `chatd admin grant` on the cluster's store, as an
    /// operator would (`--admins` takes only names that exist when a node starts).
    pub(crate) async fn grant(&self, name: &str) {
        let out = Command::new(env!("CARGO_BIN_EXE_chatd"))
            .args(["--db", &self.db_url])
            .args(["admin", "grant", name])
            .output()
            .await
            .expect("run chatd admin grant");
        assert!(out.status.success(), "chatd admin grant {name}: {out:?}");
    }

    /// Kills node `i` with SIGKILL (no shutdown of any kind) and waits for it to be gone.
    pub(crate) async fn kill(&mut self, i: usize) {
        let mut node = self.nodes[i - 1].take().expect("node already killed");
        node.child.start_kill().expect("kill chatd");
        tokio::time::timeout(WAIT, node.child.wait())
            .await
            .expect("chatd did not die")
            .expect("wait for chatd");
    }

    /// Starts nginx on a free port in front of the nodes with the repository's
    /// `deploy/nginx.conf` (its upstream servers and listen address replaced, and its
    /// connections to the nodes made from [`NGINX_SOURCE`]), and
    /// returns the front address once a ping through it is answered. `None` (after
    /// saying why) when there is no nginx with the stream module and services are not
    /// required.
    pub(crate) async fn start_nginx(&mut self, test: &str) -> Option<SocketAddr> {
        let nginx = match find_nginx() {
            Ok(nginx) => nginx,
            Err(why) => {
                skip(test, &why);
                return None;
            }
        };
        let globals = match stream_module(&nginx) {
            Ok(globals) => globals,
            Err(why) => {
                skip(test, &why);
                return None;
            }
        };
        let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/nginx.conf");
        let shipped = std::fs::read_to_string(shipped).expect("read deploy/nginx.conf");
        let front = free_port();
        let mut servers = String::new();
        for node in self.nodes.iter().flatten() {
            servers.push_str(&format!("        server {};\n", node.addr));
        }
        let mut conf = String::new();
        let mut upstreams = 0;
        for line in shipped.lines() {
            let code = line.trim_start();
            if code.starts_with("server 127.0.0.1:600") {
                if upstreams == 0 {
                    conf.push_str(&servers);
                }
                upstreams += 1;
            } else if code.starts_with("listen 127.0.0.1:6000") {
                conf.push_str(&format!("        listen {front};\n"));
            } else if code.starts_with("proxy_pass chatd;") {
                conf.push_str(line);
                conf.push_str(&format!("\n        proxy_bind {NGINX_SOURCE};\n"));
            } else {
                conf.push_str(line);
                conf.push('\n');
            }
        }
        assert_eq!(
            upstreams, 3,
            "deploy/nginx.conf: expected three upstream servers"
        );
        assert!(
            shipped.contains("proxy_protocol on;") && conf.contains("proxy_bind"),
            "deploy/nginx.conf: expected `proxy_protocol on;` and `proxy_pass chatd;`"
        );
        let prefix = self.dir.path().join("nginx");
        std::fs::create_dir_all(&prefix).expect("nginx prefix");
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        // In the foreground and in one process: killing it leaves no worker behind.
        let child = Command::new(&nginx)
            .arg("-p")
            .arg(format!("{}/", prefix.display()))
            .arg("-c")
            .arg(&conf_path)
            .args(["-e", "error.log"])
            .arg("-g")
            .arg(format!("{globals}daemon off; master_process off;"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start nginx");
        self.nginx = Some(child);
        self.wait_nginx(front, &prefix).await;
        Some(front)
    }

    /// Waits until a ping through nginx at `front` gets its reply (nginx says nothing
    /// when it is ready, so this retries the connection until it is accepted).
    async fn wait_nginx(&mut self, front: SocketAddr, prefix: &Path) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(child) = self.nginx.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "nginx exited ({status}); its log:\n{}",
                        read_log(&prefix.join("error.log"))
                    );
                }
            }
            if let Ok(stream) = tokio::net::TcpStream::connect(front).await {
                drop(stream);
                let mut conn = Conn::connect(front, "nginx-probe").await;
                conn.ok(serde_json::json!({"op": "ping"})).await;
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nginx did not listen on {front}; its log:\n{}",
                read_log(&prefix.join("error.log"))
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGKILL everything first, so that nothing writes to Redis after the clean-up.
        let mut children: Vec<Child> = self.nodes.drain(..).flatten().map(|n| n.child).collect();
        children.extend(self.nginx.take());
        for child in &mut children {
            let _ = child.start_kill();
        }
        for child in &mut children {
            for _ in 0..500 {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if std::thread::panicking() {
            for entry in std::fs::read_dir(self.dir.path()).into_iter().flatten() {
                let path = entry.map(|e| e.path()).unwrap_or_default();
                if path.extension().is_some_and(|e| e == "log") {
                    let _ = writeln!(
                        std::io::stderr(),
                        "---- {} ----\n{}",
                        path.display(),
                        read_log(&path)
                    );
                }
            }
        }
        // The test's runtime may be the one dropping this: clean up on a runtime of our own.
        let services = self.services.clone();
        let schema = self.schema.clone();
        let prefix = self.prefix.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Err(e) = services
                    .psql(&format!(
                        "SET lock_timeout = '10s'; \
                         SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE application_name = '{schema}' AND pid <> pg_backend_pid(); \
                         DROP SCHEMA IF EXISTS {schema} CASCADE"
                    ))
                    .await
                {
                    let _ = writeln!(std::io::stderr(), "cannot drop schema {schema}: {e}");
                }
                if let Err(e) = services.redis_clear(&prefix).await {
                    let _ = writeln!(std::io::stderr(), "cannot delete {prefix}* keys: {e}");
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// The last 100 lines of a log file.
fn read_log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("({e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(100)..].join("\n")
}

/// A port that was free a moment ago.
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr")
}

fn find_nginx() -> Result<PathBuf, String> {
    if let Ok(nginx) = std::env::var("NGINX") {
        return Ok(PathBuf::from(nginx));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
        .ok_or_else(|| "nginx is not installed (apt-get install nginx libnginx-mod-stream)".into())
}

/// The `load_module` directive the stream module needs (empty when it is built in), or
/// why there is none.
fn stream_module(nginx: &Path) -> Result<String, String> {
    let out = std::process::Command::new(nginx)
        .arg("-V")
        .output()
        .map_err(|e| format!("{}: {e}", nginx.display()))?;
    let info =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let flags: Vec<&str> = info.split_whitespace().collect();
    if flags.contains(&"--with-stream") {
        return Ok(String::new());
    }
    if !flags.contains(&"--with-stream=dynamic") {
        return Err("nginx has no stream module (see nginx -V)".into());
    }
    let dir = flags
        .iter()
        .find_map(|f| f.strip_prefix("--modules-path="))
        .unwrap_or("/usr/lib/nginx/modules");
    let module = Path::new(dir).join("ngx_stream_module.so");
    if module.is_file() {
        Ok(format!("load_module {};", module.display()))
    } else {
        Err(format!(
            "nginx's stream module is not installed ({}; apt-get install libnginx-mod-stream)",
            module.display()
        ))
    }
}
