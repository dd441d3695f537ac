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

/// One address holds at most `max_connections_per_address` connections; a newcomer past
/// it gets `too_many_connections`, while other addresses are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_cap_an_address_gets_too_many_connections() {
    let server = TestServer::start_with(|c| c.max_connections_per_address = 2).await;
    let mut first = server.connect().await;
    first.ok(json!({"op": "ping"})).await;
    let mut second = server.connect().await;
    second.ok(json!({"op": "ping"})).await;
    let mut third = server.connect().await;
    third.expect_kicked("too_many_connections").await;

    let mut elsewhere = crate::proxy::connect_from(server.addr(), "127.0.0.2").await;
    elsewhere.ok(json!({"op": "ping"})).await;
    first.ok(json!({"op": "ping"})).await;
}

/// Before login a frame may be `max_frame_before_login` bytes, in both protocols; once
/// logged in, `max_frame`; after logout, the small limit again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_login_frames_are_much_smaller() {
    let server = TestServer::start_with(|c| {
        c.max_frame_before_login = 512;
        c.max_frame = 4096;
    })
    .await;
    let echo = |n: usize| json!({"op": "echo", "text": "x".repeat(n)});

    // Native, before login: over 512 bytes is too large, and the connection closes.
    let mut conn = server.connect().await;
    conn.ok(echo(400)).await;
    conn.send(&echo(600)).await;
    let frames = conn.expect_closed().await;
    assert!(
        frames
            .iter()
            .any(|f| error_code(f).as_deref() == Some("too_large")),
        "{frames:?}"
    );
    // An unterminated line is refused as soon as it passes the limit.
    let mut conn = server.connect().await;
    conn.send_raw(&[b'{'; 600]).await;
    conn.expect_kicked("too_large").await;

    // Logged in: up to max_frame; logged out: the small limit again.
    let (mut alice, _) = server.user("alice").await;
    alice.ok(echo(3000)).await;
    alice.ok(json!({"op": "logout"})).await;
    alice.send(&echo(600)).await;
    alice.expect_kicked("too_large").await;

    // Classic, before login: a first object past the limit closes the connection (told
    // apart or not: answered natively, or closed without a word as classic clients are);
    // so does a later one.
    let big = format!(r#"{{"msgid":1,"id":1,"password":"{}"}}"#, "x".repeat(600));
    let mut first = server.connect().await;
    first.send_raw(big.as_bytes()).await;
    let frames = first.expect_closed().await;
    assert!(
        frames
            .iter()
            .all(|f| error_code(f).as_deref() == Some("too_large") || f["event"] == "kicked"),
        "{frames:?}"
    );
    let mut classic = crate::classic::Classic::connect(server.addr()).await;
    classic
        .send(&json!({"msgid": 1, "id": 999, "password": "nope"}))
        .await;
    let reply = classic.next().await;
    assert_eq!(reply["msgid"], 2, "{reply}");
    classic.send_raw(big.as_bytes()).await;
    classic.expect_closed().await;
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
