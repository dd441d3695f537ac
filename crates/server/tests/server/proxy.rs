//! The PROXY protocol: from a trusted address a connection starts with a header (v1 or
//! v2) naming the real client, and the per-address limits key on that client; from any
//! other address a header is just bytes.

use std::net::{IpAddr, SocketAddr};

use serde_json::{json, Value};

use crate::util::{error_code, Conn, TestServer, PASSWORD, WAIT};

/// A server that believes PROXY protocol headers from 127.0.0.1 only.
async fn behind_a_proxy(tweak: impl FnOnce(&mut chat_server::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.proxy_protocol = Some(chat_server::proxy::ProxyTrust {
            from: vec!["127.0.0.1".parse().expect("cidr")],
        });
        tweak(c);
    })
    .await
}

/// A connection from `source` (any address of 127.0.0.0/8).
pub(crate) async fn connect_from(addr: SocketAddr, source: &str) -> Conn {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    let source: IpAddr = source.parse().expect("source address");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind the client's address");
    let stream = tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    Conn::from_stream(stream)
}

/// A version 1 header saying the connection comes from `client` (IPv4).
fn v1(client: &str, server: SocketAddr) -> Vec<u8> {
    format!(
        "PROXY TCP4 {client} {} 40000 {}\r\n",
        server.ip(),
        server.port()
    )
    .into_bytes()
}

/// A version 2 header (PROXY, TCP over IPv4) saying the connection comes from `client`.
fn v2(client: &str, server: SocketAddr) -> Vec<u8> {
    let client: std::net::Ipv4Addr = client.parse().expect("client address");
    let IpAddr::V4(server_ip) = server.ip() else {
        panic!("the test server listens on IPv4");
    };
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0, 12]);
    header.extend_from_slice(&client.octets());
    header.extend_from_slice(&server_ip.octets());
    header.extend_from_slice(&40000u16.to_be_bytes());
    header.extend_from_slice(&server.port().to_be_bytes());
    header
}

/// A connection through the "proxy" (from 127.0.0.1) for `client`, announced by `header`.
async fn via_proxy(server: &TestServer, header: Vec<u8>) -> Conn {
    let mut conn = server.connect().await;
    conn.send_raw(&header).await;
    conn
}

/// Password attempts are limited per client address named in the header (v1 and v2
/// alike), not per proxy address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_attempts_are_limited_per_client_behind_the_proxy() {
    let server = behind_a_proxy(|c| {
        c.auth_rate = 0.001;
        c.auth_burst = 2.0;
    })
    .await;
    let addr = server.addr();
    let mut mallory = via_proxy(&server, v1("203.0.113.66", addr)).await;
    mallory.register("mallory", PASSWORD).await; // 1
    mallory
        .expect_err(
            json!({"op": "login", "name": "mallory", "password": "wrong"}),
            "auth_failed",
        )
        .await; // 2
    mallory
        .expect_err(
            json!({"op": "login", "name": "mallory", "password": PASSWORD}),
            "rate_limited",
        )
        .await;

    // The same client through a version 2 header: the same address, the same budget.
    let mut again = via_proxy(&server, v2("203.0.113.66", addr)).await;
    again
        .expect_err(
            json!({"op": "register", "name": "mallory2", "password": PASSWORD}),
            "rate_limited",
        )
        .await;

    // Other clients through the same proxy are not locked out, whichever version.
    let mut alice = via_proxy(&server, v2("198.51.100.7", addr)).await;
    alice.register("alice", PASSWORD).await;
    alice.login_name("alice", PASSWORD).await;
    let mut bob = via_proxy(&server, v1("198.51.100.8", addr)).await;
    bob.register("bob", PASSWORD).await;
    bob.login_name("bob", PASSWORD).await;
    alice.ok(json!({"op": "whoami"})).await;
}

/// The connection cap per address counts the clients the headers name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_counts_clients_behind_the_proxy() {
    let server = behind_a_proxy(|c| c.max_connections_per_address = 2).await;
    let addr = server.addr();
    let mut first = via_proxy(&server, v1("203.0.113.5", addr)).await;
    first.ok(json!({"op": "ping"})).await;
    let mut second = via_proxy(&server, v2("203.0.113.5", addr)).await;
    second.ok(json!({"op": "ping"})).await;
    let mut third = via_proxy(&server, v1("203.0.113.5", addr)).await;
    third.expect_kicked("too_many_connections").await;
    // Two connections from the proxy's own address already, yet another client is served.
    let mut other = via_proxy(&server, v2("203.0.113.6", addr)).await;
    other.ok(json!({"op": "ping"})).await;
    first.ok(json!({"op": "ping"})).await;
}

/// A trusted address must send a header: without one the connection is closed unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_address_without_a_header_is_closed() {
    let server = behind_a_proxy(|_| {}).await;
    let mut conn = server.connect().await;
    conn.send_raw(b"{\"op\":\"ping\",\"rid\":1}\n").await;
    let frames = conn.expect_closed().await;
    assert!(frames.is_empty(), "{frames:?}");
    // A header with bytes of the client's stream in the same write loses none of them.
    let mut header = v1("203.0.113.9", server.addr());
    header.extend_from_slice(b"{\"op\":\"echo\",\"rid\":7,\"text\":\"hi\"}\n");
    let mut conn = server.connect().await;
    conn.send_raw(&header).await;
    let reply = conn.reply_for(&json!(7)).await;
    assert_eq!(reply["text"], "hi", "{reply}");
}

/// From an address that is not trusted a header is not honoured: it is a malformed
/// line, and the limits key on the connection's own address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_from_an_untrusted_address_is_not_honoured() {
    let server = behind_a_proxy(|c| {
        c.auth_rate = 0.001;
        c.auth_burst = 1.0;
    })
    .await;
    let mut conn = connect_from(server.addr(), "127.0.0.2").await;
    conn.send_raw(&v1("203.0.113.10", server.addr())).await;
    let reply: Value = conn.reply_for(&Value::Null).await;
    assert_eq!(
        error_code(&reply).as_deref(),
        Some("bad_request"),
        "{reply}"
    );
    conn.register("carol", PASSWORD).await;
    // The budget spent was 127.0.0.2's, whatever the header said.
    let mut again = connect_from(server.addr(), "127.0.0.2").await;
    again.send_raw(&v1("203.0.113.11", server.addr())).await;
    let _ = again.reply_for(&Value::Null).await;
    again
        .expect_err(
            json!({"op": "register", "name": "dave", "password": PASSWORD}),
            "rate_limited",
        )
        .await;
}
