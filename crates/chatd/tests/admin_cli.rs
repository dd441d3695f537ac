//! `chatd admin grant|revoke|reset-password NAME` on the store of a running server: the
//! user becomes an admin (the login reply says so, admin ops work), then an ordinary user
//! again; its password is reset and its tokens revoked. The store file is private.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(20);

struct Line {
    read: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl Line {
    async fn connect(addr: &str) -> Line {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (read, write) = stream.into_split();
        Line {
            read: BufReader::new(read).lines(),
            write,
        }
    }

    /// Sends a request and returns its reply, skipping events.
    async fn request(&mut self, req: Value) -> Value {
        let mut line = req.to_string();
        line.push('\n');
        self.write.write_all(line.as_bytes()).await.expect("write");
        tokio::time::timeout(WAIT, async {
            loop {
                let line = self.read.next_line().await.expect("read").expect("closed");
                let frame: Value = serde_json::from_str(&line).expect("json");
                if frame.get("event").is_none() {
                    return frame;
                }
            }
        })
        .await
        .expect("no reply in time")
    }
}

async fn admin(db: &std::path::Path, action: &str, name: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chatd"))
        .arg("--db")
        .arg(db)
        .args(["admin", action, name])
        .output()
        .await
        .expect("run chatd admin")
}

#[tokio::test]
async fn grant_and_revoke_work_on_a_live_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("chat.db");
    let mut server = Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--hash-memory-kib",
            "8",
            "--hash-iterations",
            "1",
        ])
        .arg("--db")
        .arg(&db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn chatd");
    let mut out = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let addr = tokio::time::timeout(WAIT, async {
        loop {
            let line = out.next_line().await.expect("read").expect("chatd exited");
            if let Some(addr) = line.strip_prefix("chatd listening on ") {
                return addr.to_string();
            }
        }
    })
    .await
    .expect("chatd did not start");

    let mut alice = Line::connect(&addr).await;
    let reply = alice
        .request(json!({"op": "register", "name": "alice", "password": "pw"}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let login = json!({"op": "login", "name": "alice", "password": "pw"});
    assert_eq!(alice.request(login.clone()).await["admin"], false);
    let refused = alice
        .request(json!({"op": "broadcast", "text": "hi"}))
        .await;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");

    let granted = admin(&db, "grant", "alice").await;
    assert!(granted.status.success(), "{granted:?}");
    assert!(String::from_utf8_lossy(&granted.stdout).contains("is an admin"));
    // Admin ops work at once; the login reply says so from the next login.
    let ok = alice
        .request(json!({"op": "broadcast", "text": "hi"}))
        .await;
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(alice.request(login.clone()).await["admin"], true);

    let revoked = admin(&db, "revoke", "alice").await;
    assert!(revoked.status.success(), "{revoked:?}");
    let refused = alice
        .request(json!({"op": "broadcast", "text": "hi"}))
        .await;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");

    let unknown = admin(&db, "grant", "nobody").await;
    assert!(
        !unknown.status.success(),
        "granting an unknown user succeeded"
    );

    // The store file is the server user's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&db).expect("db").permissions().mode();
    assert_eq!(mode & 0o077, 0, "store file mode {mode:o}");

    // reset-password: the new password works; the old one and every token do not.
    let token = alice.request(login.clone()).await["token"].clone();
    assert!(token.is_string());
    let reset = reset_password(&db, "alice", "new secret\n").await;
    assert!(reset.status.success(), "{reset:?}");
    // Each of alice's three password logins made a token.
    let said = String::from_utf8_lossy(&reset.stdout);
    assert!(
        said.contains("password set; 3 session token(s) revoked"),
        "{said}"
    );
    let mut other = Line::connect(&addr).await;
    let reply = other.request(json!({"op": "login", "token": token})).await;
    assert_eq!(reply["error"]["code"], "auth_failed", "{reply}");
    let reply = other.request(login.clone()).await;
    assert_eq!(reply["error"]["code"], "auth_failed", "{reply}");
    let reply = other
        .request(json!({"op": "login", "name": "alice", "password": "new secret"}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let empty = reset_password(&db, "alice", "").await;
    assert!(!empty.status.success(), "an empty password was set");
    let unknown = reset_password(&db, "nobody", "pw\n").await;
    assert!(!unknown.status.success(), "reset the password of nobody");

    server.kill().await.expect("kill");
}

async fn reset_password(db: &std::path::Path, name: &str, stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatd"))
        .arg("--db")
        .arg(db)
        .args(["--hash-memory-kib", "8", "--hash-iterations", "1"])
        .args(["admin", "reset-password", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run chatd admin reset-password");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    child.wait_with_output().await.expect("wait")
}
