//! TLS end to end: a server with a certificate made for this test, and the `chat` binary
//! connecting with `--tls --ca`; a plain client is refused, a client that does not trust
//! the certificate fails its handshake.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(20);

struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    /// A self-signed certificate for 127.0.0.1 and localhost.
    fn new() -> Certs {
        let dir = tempfile::tempdir().expect("temp dir");
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
                .expect("certificate");
        std::fs::write(dir.path().join("cert.pem"), certified.cert.pem()).expect("write");
        std::fs::write(
            dir.path().join("key.pem"),
            certified.key_pair.serialize_pem(),
        )
        .expect("write");
        Certs { dir }
    }

    fn cert(&self) -> std::path::PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> std::path::PathBuf {
        self.dir.path().join("key.pem")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_chats_over_tls() {
    let certs = Certs::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = chat_server::Config {
        tls: Some(chat_server::config::TlsFiles {
            cert: certs.cert(),
            key: certs.key(),
        }),
        ..chat_server::Config::for_tests(dir.path().join("chat.db"))
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(chat_server::run(listener, config, async move {
        let _ = stopped.await;
    }));

    // Bob, through the client library over TLS, waits for Alice's message.
    let (bob, mut bob_events) =
        chat_client::Client::connect_tls(addr, "127.0.0.1", Some(&certs.cert()))
            .await
            .expect("TLS connect");
    let bob_id = bob.register("bob", "pw").await.expect("register").user.id;
    bob.login_name("bob", "pw").await.expect("login");

    // Alice, the `chat` binary with --tls --ca, piped.
    let mut alice = Command::new(env!("CARGO_BIN_EXE_chat"))
        .arg(addr.to_string())
        .args(["--tls", "--ca"])
        .arg(certs.cert())
        .args(["--register", "alice", "--password", "pw"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn chat");
    let mut stdin = alice.stdin.take().expect("stdin");
    let mut lines = BufReader::new(alice.stdout.take().expect("stdout")).lines();
    stdin
        .write_all(format!("chat:{bob_id}:hello over tls\n").as_bytes())
        .await
        .expect("write");
    let sent = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.expect("read") {
            if line.starts_with("ok: message") {
                return line;
            }
            assert!(!line.starts_with("error"), "chat failed: {line}");
        }
        panic!("chat ended before sending");
    })
    .await
    .expect("no send confirmation in time");
    assert!(sent.contains("sent"), "{sent}");

    let got = tokio::time::timeout(WAIT, async {
        loop {
            match bob_events.next().await.expect("bob's connection closed") {
                chat_proto::Event::Msg(msg) => return msg,
                _ => continue,
            }
        }
    })
    .await
    .expect("no message in time");
    assert_eq!(got.text, "hello over tls");
    assert_eq!(got.from_name, "alice");

    drop(stdin);
    let status = tokio::time::timeout(WAIT, alice.wait())
        .await
        .expect("chat did not exit")
        .expect("wait");
    assert!(status.success(), "chat exited with {status}");

    // A client that does not trust the certificate fails its handshake.
    let other = tempfile::tempdir().expect("temp dir");
    let stranger = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("cert");
    std::fs::write(other.path().join("ca.pem"), stranger.cert.pem()).expect("write");
    let refused =
        chat_client::Client::connect_tls(addr, "127.0.0.1", Some(&other.path().join("ca.pem")))
            .await;
    assert!(refused.is_err(), "an untrusted certificate was accepted");

    // Plain JSON lines to a TLS listener get no answer but a close.
    let (plain, _events) = chat_client::Client::connect(addr)
        .await
        .expect("tcp connect");
    assert!(
        tokio::time::timeout(WAIT, plain.call_ok(&chat_proto::Request::Ping))
            .await
            .expect("no close in time")
            .is_err(),
        "a plain client was served on a TLS listener"
    );

    let _ = stop.send(());
    server.await.expect("join").expect("server");
}
