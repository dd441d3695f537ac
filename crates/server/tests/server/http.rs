//! The operator's HTTP endpoints: `/metrics` counts what happened, `/healthz` and
//! `/readyz` answer, anything else is 404.

use serde_json::json;

use crate::util::TestServer;

/// The value of the sample `line` starts with (`name{labels}`), if present.
fn sample(metrics: &str, line: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(line) && l[line.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_connections_logins_messages_and_deliveries() {
    let server = TestServer::start_with_http().await;
    let (mut alice, _) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let mut stranger = server.connect().await;
    let reply = stranger
        .request(json!({"op": "login", "name": "alice", "password": "wrong"}))
        .await;
    assert_eq!(reply["error"]["code"], "auth_failed");
    alice.send_msg(bob_id, "counted").await;
    bob.next_msg().await;

    let (status, text) = server.http_get("/metrics").await;
    assert_eq!(status, 200, "{text}");
    let value = |line: &str| sample(&text, line).unwrap_or_else(|| panic!("no {line} in\n{text}"));
    assert_eq!(value("chatd_connections{transport=\"tcp\"}"), 3.0);
    assert_eq!(value("chatd_sessions"), 2.0);
    assert_eq!(
        value("chatd_logins_total{method=\"password\",result=\"ok\"}"),
        2.0
    );
    assert_eq!(
        value("chatd_logins_total{method=\"password\",result=\"failed\"}"),
        1.0
    );
    assert_eq!(value("chatd_messages_total{kind=\"direct\"}"), 1.0);
    assert_eq!(value("chatd_deliveries_total"), 1.0);
    assert_eq!(value("chatd_delivery_latency_seconds_count"), 1.0);
    assert!(
        text.contains("# TYPE chatd_delivery_latency_seconds histogram"),
        "{text}"
    );
    assert_eq!(value("chatd_errors_total{code=\"auth_failed\"}"), 1.0);
    assert!(value("process_resident_memory_bytes") > 1e6, "{text}");
    assert!(value("process_open_fds") >= 3.0, "{text}");
    assert!(text.contains("process_cpu_seconds_total "), "{text}");

    // A connection that goes is no longer counted.
    drop(stranger);
    let deadline = tokio::time::Instant::now() + crate::util::WAIT;
    loop {
        let (_, text) = server.http_get("/metrics").await;
        if sample(&text, "chatd_connections{transport=\"tcp\"}") == Some(2.0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer() {
    let server = TestServer::start_with_http().await;
    assert_eq!(server.http_get("/healthz").await, (200, "ok\n".into()));
    assert_eq!(server.http_get("/readyz").await, (200, "ready\n".into()));
    assert_eq!(server.http_get("/nothing").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_http_is_served_over_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("temp dir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("certificate");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write key");
    let files = chat_server::config::TlsFiles {
        cert: cert.clone(),
        key,
    };
    let server = TestServer::start_with_http_and(|c| c.tls = Some(files)).await;

    // HTTPS answers, with the server's certificate.
    let connector = chat_client::tls_connector(Some(&cert)).expect("connector");
    let tcp = tokio::net::TcpStream::connect(server.http_addr())
        .await
        .expect("connect");
    let name =
        tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").expect("server name");
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    let _ = tokio::time::timeout(crate::util::WAIT, tls.read_to_string(&mut response))
        .await
        .expect("no response in time");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok\n"), "{response}");

    // Plain HTTP gets no page from it.
    let mut plain = tokio::net::TcpStream::connect(server.http_addr())
        .await
        .expect("connect");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(crate::util::WAIT, plain.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
}
