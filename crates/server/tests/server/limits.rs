//! Overload protection: the connection limit, the request rate limit per connection,
//! and the limit on registrations and password logins per source address.

use std::time::Duration;

use serde_json::json;

use crate::util::{error_code, Conn, TestServer, PASSWORD};

/// Past `max_connections`, a new connection gets one `server_full` line and is closed;
/// the connections already there carry on, and a place frees up when one leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_a_newcomer_gets_server_full() {
    let server = TestServer::start_with(|c| c.max_connections = 2).await;
    let (mut alice, _) = server.user("alice").await;
    let mut second = server.connect().await;
    second.ok(json!({"op": "ping"})).await;

    let mut third = server.connect().await;
    third.expect_kicked("server_full").await;

    alice.ok(json!({"op": "whoami"})).await;
    second.ok(json!({"op": "ping"})).await;

    // When one leaves, the next newcomer is served (the place frees up as soon as the
    // server has seen the close: retry until then).
    second.drop_connection();
    let mut served = false;
    for _ in 0..100 {
        // The client library reports a close as an error, where the raw Conn panics.
        let (next, _events) = chat_client::Client::connect(server.addr())
            .await
            .expect("connect");
        if next.call_ok(&chat_proto::Request::Ping).await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "no place freed up after a connection left");
}

/// Requests past the rate get `rate_limited` and the connection lives; a connection that
/// keeps on far past it is closed with `kicked` `rate_limited`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_rate_are_refused_then_the_connection_is_closed() {
    let server = TestServer::start_with(|c| {
        c.request_rate = 1.0;
        c.request_burst = 5.0;
    })
    .await;
    let mut conn = server.connect().await;
    for _ in 0..5 {
        conn.ok(json!({"op": "ping"})).await;
    }
    // The soft bucket is empty: refused, with the rid, and the connection lives.
    let reply = conn.request(json!({"op": "echo", "text": "x"})).await;
    assert_eq!(
        error_code(&reply).as_deref(),
        Some("rate_limited"),
        "{reply}"
    );
    // Keeping on past 4 times the burst closes it.
    let mut closed = false;
    // One write: the server may close the connection before a later write could land.
    let burst: String = (0..40).map(|_| "{\"op\":\"ping\"}\n").collect();
    conn.send_raw(burst.as_bytes()).await;
    let frames = conn.expect_closed().await;
    let kicked: Vec<_> = frames.iter().filter(|f| f["event"] == "kicked").collect();
    if let Some(kick) = kicked.first() {
        assert_eq!(kick["reason"], "rate_limited");
        closed = true;
    }
    assert!(closed, "no kicked before the close: {frames:?}");
    // Others are not affected.
    let mut other = server.connect().await;
    other.ok(json!({"op": "ping"})).await;
}

/// Registrations and password logins are limited per source address, so that guessing
/// passwords is slow; a token login is not limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_attempts_are_limited_per_address() {
    let server = TestServer::start_with(|c| {
        c.auth_rate = 0.5;
        c.auth_burst = 3.0;
    })
    .await;
    let mut conn = server.connect().await;
    conn.register("alice", PASSWORD).await; // 1
    let (reply, _) = conn
        .login(json!({"name": "alice", "password": PASSWORD}))
        .await; // 2
    let token = reply["token"].as_str().unwrap().to_string();
    conn.expect_err(
        json!({"op": "login", "name": "alice", "password": "wrong"}),
        "auth_failed",
    )
    .await; // 3
            // The fourth attempt from this address is refused before any password is checked,
            // even with the right password, and even on a new connection.
    conn.expect_err(
        json!({"op": "login", "name": "alice", "password": PASSWORD}),
        "rate_limited",
    )
    .await;
    let mut again = server.connect().await;
    again
        .expect_err(
            json!({"op": "register", "name": "bob", "password": PASSWORD}),
            "rate_limited",
        )
        .await;
    // A token login hashes nothing and is not limited.
    let mut by_token: Conn = server.connect().await;
    let (reply, _) = by_token.login(json!({"token": token})).await;
    assert_eq!(reply["user"]["name"], "alice");
}

/// A client that pipelines far more than it may still reads its `kicked`: the server
/// half-closes and drains the input instead of resetting the connection with the
/// requests it did not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_still_reads_why_it_was_closed() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let server = TestServer::start_with(|c| {
        c.request_rate = 1.0;
        c.request_burst = 5.0;
    })
    .await;
    let stream = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("connect");
    let (read, mut write) = stream.into_split();
    // About 1 MB of pings: far more than the server reads before it closes.
    let flood: Vec<u8> = "{\"op\":\"ping\"}\n".repeat(70_000).into_bytes();
    // All of it is written (or refused) before the client reads a byte, as a client
    // that pipelines and reads later would.
    let written = tokio::time::timeout(crate::util::WAIT, write.write_all(&flood))
        .await
        .expect("the flood could not be written");
    let mut lines = tokio::io::BufReader::new(read).lines();
    let mut kicked = None;
    let outcome = tokio::time::timeout(crate::util::WAIT, async {
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    if line.contains("\"kicked\"") {
                        kicked = Some(line);
                    }
                }
                Ok(None) => return "closed",
                Err(_) => return "reset",
            }
        }
    })
    .await
    .expect("the connection was not closed");
    let kicked = kicked.unwrap_or_else(|| panic!("no kicked before the connection {outcome}"));
    assert!(kicked.contains("rate_limited"), "{kicked}");
    // The server read (and dropped) the rest instead of resetting the connection.
    assert!(written.is_ok(), "{written:?}");
    assert_eq!(outcome, "closed");
}
