//! `chatd admin grant|revoke NAME` on the store of a running server: the user becomes an
//! admin (the login reply says so, admin ops work), then an ordinary user again.

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

    server.kill().await.expect("kill");
}
