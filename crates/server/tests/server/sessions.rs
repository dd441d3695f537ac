//! Session lifecycle: one session per user, the login and idle timeouts, shutdown, and a
//! restart on the same store.

use std::time::Duration;

use serde_json::json;

use crate::util::{befriend, ids, TestServer, PASSWORD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_login_kicks_the_first_without_presence() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    befriend(&mut alice, alice_id, &mut bob, bob_id).await;

    let mut bob2 = server.connect().await;
    let (reply, _) = bob2
        .login(json!({"id": bob_id, "password": PASSWORD}))
        .await;
    assert_eq!(reply["user"]["id"], bob_id);
    bob.expect_kicked("logged_in_elsewhere").await;

    // The new session works; its friend stays online and saw no presence change: the
    // next thing alice gets is bob's message.
    let me = bob2.ok(json!({"op": "whoami"})).await;
    assert_eq!(me["user"]["id"], bob_id);
    let sent = bob2.send_msg(alice_id, "moved").await;
    let event = alice.next_event().await;
    assert_eq!(
        event["event"], "msg",
        "alice got {event} instead of the message"
    );
    assert_eq!(event["id"], sent["id"]);
    let friends = alice.ok(json!({"op": "friends"})).await;
    assert_eq!(friends["friends"][0]["online"], true, "{friends}");

    // Messages now reach the new session.
    let sent = alice.send_msg(bob_id, "to the new one").await;
    assert_eq!(bob2.next_msg().await["id"], sent["id"]);

    // A token login kicks too.
    let token = reply["token"].as_str().unwrap().to_string();
    let mut bob3 = server.connect().await;
    bob3.login(json!({"token": token})).await;
    bob2.expect_kicked("logged_in_elsewhere").await;
    bob3.ok(json!({"op": "whoami"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_does_not_log_in_is_kicked() {
    let server = TestServer::start_with(|c| c.login_timeout = Duration::from_millis(700)).await;
    let mut silent = server.connect().await;
    silent.expect_kicked("login_timeout").await;

    // Registering and pinging do not count as a login.
    let mut busy = server.connect().await;
    busy.register("alice", PASSWORD).await;
    busy.ok(json!({"op": "ping"})).await;
    busy.expect_kicked("login_timeout").await;

    // Others are unaffected.
    let mut conn = server.connect().await;
    conn.login_name("alice", PASSWORD).await;
    conn.ok(json!({"op": "whoami"})).await;
}

/// A connection that logs in at once stays past the login timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_in_connection_outlives_the_login_timeout() {
    let server = TestServer::start_with(|c| c.login_timeout = Duration::from_millis(500)).await;
    let mut setup = server.connect().await;
    setup.register("alice", PASSWORD).await;
    let mut conn = server.connect().await;
    conn.login_name("alice", PASSWORD).await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        conn.ok(json!({"op": "ping"})).await;
    }
    assert!(
        conn.buffered_events().is_empty(),
        "{:?}",
        conn.buffered_events()
    );
}

/// A logout long after the connection opened does not count as a missed login: the
/// connection stays open and can log in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_after_the_login_timeout_keeps_the_connection() {
    let server = TestServer::start_with(|c| c.login_timeout = Duration::from_millis(300)).await;
    let mut setup = server.connect().await;
    setup.register("alice", PASSWORD).await;
    let mut conn = server.connect().await;
    conn.login_name("alice", PASSWORD).await;
    // Stay logged in past the login timeout.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        conn.ok(json!({"op": "ping"})).await;
    }
    conn.ok(json!({"op": "logout"})).await;
    // A pause, not a wait for something: room for a wrong kick to arrive.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = conn.request(json!({"op": "ping"})).await;
    assert_eq!(reply["ok"], true, "{reply}");
    conn.login_name("alice", PASSWORD).await;
    assert!(
        conn.buffered_events().is_empty(),
        "{:?}",
        conn.buffered_events()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_kicked_and_a_pinging_one_stays() {
    let server = TestServer::start_with(|c| c.idle_timeout = Duration::from_millis(400)).await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    befriend(&mut alice, alice_id, &mut bob, bob_id).await;

    // Alice pings every 100 ms for over a second: never idle. Bob says nothing.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let reply = alice.request(json!({"op": "ping"})).await;
        assert_eq!(reply["ok"], true, "alice was cut off: {reply}");
    }
    bob.expect_kicked("idle_timeout").await;
    // Bob's friend hears that bob went offline.
    let presence = alice.wait_event("presence").await;
    assert_eq!(
        presence,
        json!({"event": "presence", "user": bob_id, "online": false})
    );
    let kicks: Vec<_> = alice
        .buffered_events()
        .into_iter()
        .filter(|e| e["event"] == "kicked")
        .collect();
    assert!(kicks.is_empty(), "{kicks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_kicks_every_session_and_run_returns_ok() {
    let mut server = TestServer::start().await;
    let (mut alice, _) = server.user("alice").await;
    let (mut bob, _) = server.user("bob").await;
    let mut anonymous = server.connect().await;
    anonymous.ok(json!({"op": "ping"})).await;
    let addr = server.addr();

    server.stop().await;
    for conn in [&mut alice, &mut bob, &mut anonymous] {
        conn.expect_kicked("shutdown").await;
    }
    // The listener is gone.
    let refused = tokio::time::timeout(crate::util::WAIT, tokio::net::TcpStream::connect(addr))
        .await
        .unwrap();
    assert!(refused.is_err(), "the server still accepts connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loses_nothing() {
    let mut server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    befriend(&mut alice, alice_id, &mut bob, bob_id).await;
    bob.drop_connection();
    let group = alice.create_group("durable").await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(alice.send_msg(bob_id, &format!("before restart {i}")).await);
    }
    let group_msg = alice.group_send(group, "group before restart").await;

    server.restart().await;
    alice.expect_kicked("shutdown").await;

    // Bob logs in with the password he registered with and gets every pending message.
    let mut bob = server.connect().await;
    let (reply, pending) = bob.login(json!({"id": bob_id, "password": PASSWORD})).await;
    assert_eq!(reply["user"], json!({"id": bob_id, "name": "bob"}));
    assert_eq!(
        reply["friends"],
        json!([{"id": alice_id, "name": "alice", "online": false}])
    );
    assert_eq!(pending.len(), 5, "{pending:?}");
    for (i, (event, sent)) in pending.iter().zip(&sent).enumerate() {
        assert_eq!(event["id"], sent["id"]);
        assert_eq!(event["ts"], sent["ts"]);
        assert_eq!(event["from"], alice_id);
        assert_eq!(event["text"], format!("before restart {i}"));
    }

    // Alice's group, history and names survived; new ids go on increasing.
    let mut alice = server.connect().await;
    let reply = alice.login_name("alice", PASSWORD).await;
    assert_eq!(ids(&reply["groups"]), vec![group], "{reply}");
    assert_eq!(reply["groups"][0]["role"], "creator");
    let page = alice.ok(json!({"op": "history", "group": group})).await;
    assert_eq!(
        ids(&page["messages"]),
        vec![group_msg["id"].as_i64().unwrap()]
    );
    let page = alice.ok(json!({"op": "history", "with": bob_id})).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 5, "{page}");
    let after = alice.send_msg(bob_id, "after restart").await;
    assert!(after["id"].as_i64() > group_msg["id"].as_i64(), "{after}");
    assert_eq!(bob.next_msg().await["id"], after["id"]);

    // Names stay unique across the restart.
    bob.expect_err(
        json!({"op": "register", "name": "alice", "password": "x"}),
        "conflict",
    )
    .await;
    server.stop().await;
}
