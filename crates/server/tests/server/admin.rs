//! Administration and expiry: admin ops refused to others, kick, mute (with its end, its
//! survival across a reconnect and a restart), unmute, broadcast, shutdown, a group
//! creator's `group_kick`, the `admin` flag of the login reply, pending expiry and
//! history retention.

use std::time::Duration;

use serde_json::{json, Value};

use crate::util::{error_code, ids, TestServer, PASSWORD};

/// A server on which `root` is an admin (`--admins root`).
async fn with_root() -> TestServer {
    TestServer::start_with(|c| c.admins = vec!["root".to_string()]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_ops_are_refused_to_everyone_else() {
    let server = with_root().await;
    let (mut eve, _) = server.user("eve").await;
    let (_bob, bob_id) = server.user("bob").await;
    for req in [
        json!({"op": "kick", "id": bob_id}),
        json!({"op": "mute", "id": bob_id, "seconds": 60}),
        json!({"op": "unmute", "id": bob_id}),
        json!({"op": "broadcast", "text": "hi all"}),
        json!({"op": "shutdown"}),
    ] {
        eve.expect_err(req, "forbidden").await;
    }
    // Nothing happened: bob can still send, the server still serves.
    eve.send_msg(bob_id, "still here").await;
    let (reply, _) = server
        .connect()
        .await
        .login(json!({"name": "eve", "password": PASSWORD}))
        .await;
    assert_eq!(reply["admin"], false, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_reply_says_who_is_an_admin() {
    let server = with_root().await;
    server.register("root").await;
    let (reply, _) = server
        .connect()
        .await
        .login(json!({"name": "root", "password": PASSWORD}))
        .await;
    assert_eq!(reply["admin"], true, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_kicks_a_user_with_a_reason() {
    let server = with_root().await;
    let (mut root, _) = server.user("root").await;
    let (mut bob, bob_id) = server.user("bob").await;
    root.ok(json!({"op": "kick", "id": bob_id, "reason": "calm down"}))
        .await;
    let frames = bob.expect_closed().await;
    let kicked: Vec<&Value> = frames.iter().filter(|f| f["event"] == "kicked").collect();
    assert_eq!(kicked.len(), 1, "{frames:?}");
    assert_eq!(kicked[0]["reason"], "admin");
    assert_eq!(kicked[0]["message"], "calm down");
    root.expect_err(json!({"op": "kick", "id": 999_999}), "not_found")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_user_cannot_send_until_unmuted_even_after_a_restart() {
    let mut server = with_root().await;
    let (mut root, root_id) = server.user("root").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (_, carol_id) = server.user("carol").await;
    let group = bob.create_group("club").await;

    let reply = root
        .ok(json!({"op": "mute", "id": bob_id, "seconds": 3600}))
        .await;
    assert!(reply["until"].as_i64().unwrap() > 0, "{reply}");
    let refused = bob
        .request(json!({"op": "send", "to": carol_id, "text": "hi"}))
        .await;
    assert_eq!(error_code(&refused).as_deref(), Some("forbidden"));
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("muted until"),
        "{refused}"
    );
    bob.expect_err(
        json!({"op": "group_send", "group": group, "text": "hi"}),
        "forbidden",
    )
    .await;

    // A new session and a restart do not lift it.
    server.restart().await;
    let mut bob = server.connect().await;
    bob.login(json!({"name": "bob", "password": PASSWORD}))
        .await;
    bob.expect_err(
        json!({"op": "send", "to": carol_id, "text": "hi"}),
        "forbidden",
    )
    .await;

    let mut root = server.connect().await;
    root.login(json!({"name": "root", "password": PASSWORD}))
        .await;
    root.ok(json!({"op": "unmute", "id": bob_id})).await;
    bob.send_msg(carol_id, "free again").await;
    bob.send_msg(root_id, "thanks").await;
    root.expect_err(
        json!({"op": "mute", "id": bob_id, "seconds": 0}),
        "bad_request",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mute_ends_by_itself() {
    let server = with_root().await;
    let (mut root, _) = server.user("root").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (_, carol_id) = server.user("carol").await;
    root.ok(json!({"op": "mute", "id": bob_id, "seconds": 1}))
        .await;
    bob.expect_err(
        json!({"op": "send", "to": carol_id, "text": "hi"}),
        "forbidden",
    )
    .await;
    // Retry until the mute has run out (about a second), within a deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = bob
            .request(json!({"op": "send", "to": carol_id, "text": "hi"}))
            .await;
        if reply["ok"] == true {
            break;
        }
        assert_eq!(error_code(&reply).as_deref(), Some("forbidden"));
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mute never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_everyone_online() {
    let server = with_root().await;
    let (mut root, root_id) = server.user("root").await;
    let (mut bob, _) = server.user("bob").await;
    let (mut carol, _) = server.user("carol").await;
    root.ok(json!({"op": "broadcast", "text": "maintenance at noon"}))
        .await;
    for conn in [&mut bob, &mut carol, &mut root] {
        let event = conn.wait_event("broadcast").await;
        assert_eq!(event["text"], "maintenance at noon");
        assert_eq!(event["from"], root_id);
        assert_eq!(event["from_name"], "root");
        assert!(event["ts"].as_i64().unwrap() > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_shuts_the_server_down() {
    let mut server = with_root().await;
    let (mut root, _) = server.user("root").await;
    let (mut bob, _) = server.user("bob").await;
    root.ok(json!({"op": "shutdown", "grace": 2})).await;
    bob.expect_kicked("shutdown").await;
    root.expect_kicked("shutdown").await;
    // `run` returns Ok by itself (stop() only waits for it).
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_creator_removes_a_member() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (mut carol, carol_id) = server.user("carol").await;
    let group = alice.create_group("club").await;
    bob.ok(json!({"op": "join_group", "group": group})).await;
    carol.ok(json!({"op": "join_group", "group": group})).await;

    carol
        .expect_err(
            json!({"op": "group_kick", "group": group, "id": bob_id}),
            "forbidden",
        )
        .await;
    alice
        .ok(json!({"op": "group_kick", "group": group, "id": bob_id}))
        .await;
    let event = bob.wait_event("removed_from_group").await;
    assert_eq!(event["group"], group);
    alice
        .expect_err(
            json!({"op": "group_kick", "group": group, "id": bob_id}),
            "not_found",
        )
        .await;

    // Bob gets no more of the group's messages; Carol still does.
    alice.group_send(group, "after bob left").await;
    let msg = carol.next_msg().await;
    assert_eq!(msg["text"], "after bob left");
    bob.expect_err(json!({"op": "group_members", "group": group}), "forbidden")
        .await;
    let members = alice
        .ok(json!({"op": "group_members", "group": group}))
        .await;
    let member_ids: Vec<i64> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert!(!member_ids.contains(&bob_id) && member_ids.contains(&carol_id));
}

/// A pending message older than the pending TTL is not delivered (it stays in history).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_messages_expire_from_delivery_but_stay_in_history() {
    let server = TestServer::start_with(|c| c.pending_ttl = Duration::from_millis(400)).await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (_, bob_id) = server.register("bob").await;
    let old = alice.send_msg(bob_id, "old news").await;
    // Let the first message age past the TTL (time passing is what is tested here).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let fresh = alice.send_msg(bob_id, "fresh").await;
    let mut bob = server.connect().await;
    let (_, pending) = bob
        .login(json!({"name": "bob", "password": PASSWORD}))
        .await;
    let got: Vec<i64> = pending.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert_eq!(got, vec![fresh["id"].as_i64().unwrap()]);
    let history = bob.ok(json!({"op": "history", "with": alice_id})).await;
    assert_eq!(
        ids(&history["messages"]),
        vec![old["id"].as_i64().unwrap(), fresh["id"].as_i64().unwrap()]
    );
}

/// With a history retention, old messages are purged in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_messages_are_purged_after_the_retention() {
    let server = TestServer::start_with(|c| {
        c.history_retention = Some(Duration::from_millis(300));
        c.purge_every = Duration::from_millis(50);
    })
    .await;
    let (mut alice, _) = server.user("alice").await;
    let (_, bob_id) = server.register("bob").await;
    alice.send_msg(bob_id, "soon gone").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let history = alice.ok(json!({"op": "history", "with": bob_id})).await;
        if history["messages"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never purged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // New messages go on as usual.
    alice.send_msg(bob_id, "new").await;
}
