//! One-to-one messages: delivery at once, pending delivery at login, acks, history.

use serde_json::{json, Value};

use crate::util::{ids, TestServer, PASSWORD};

/// Checks that `event` is the one-to-one `msg` for `sent` (the sender's `msg: {id, ts}`).
fn assert_direct(event: &Value, sent: &Value, from: (i64, &str), to: i64, text: &str) {
    let expected = json!({
        "event": "msg",
        "id": sent["id"],
        "ts": sent["ts"],
        "from": from.0,
        "from_name": from.1,
        "text": text,
        "to": to,
        "conv": sent["conv"],
        "seq": sent["seq"],
    });
    assert!(sent["conv"].as_i64().unwrap_or(0) > 0, "{sent}");
    assert!(sent["seq"].as_i64().unwrap_or(0) > 0, "{sent}");
    let mut got = event.clone();
    // A one-to-one message has no group; tolerate an explicit null only.
    if got.get("group") == Some(&Value::Null) {
        got.as_object_mut().unwrap().remove("group");
    }
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_an_online_recipient_at_once() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;

    let sent = alice.send_msg(bob_id, "hello bob").await;
    let ts = sent["ts"].as_i64().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        (now_ms - 600_000..=now_ms + 600_000).contains(&ts),
        "ts {ts} is not ms since the epoch"
    );
    let event = bob.next_event().await;
    assert_direct(&event, &sent, (alice_id, "alice"), bob_id, "hello bob");

    // The sender gets no event of its own message: the first msg alice sees is bob's.
    let answer = bob.send_msg(alice_id, "hi alice").await;
    let event = alice.next_event().await;
    assert_direct(&event, &answer, (bob_id, "bob"), alice_id, "hi alice");
    assert!(answer["id"].as_i64() > sent["id"].as_i64());

    // Friends or not, anyone can be written to; no one who does not exist.
    alice
        .expect_err(
            json!({"op": "send", "to": bob_id + 1000, "text": "hi"}),
            "not_found",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_ids_increase_and_order_is_kept() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (mut carol, _) = server.user("carol").await;

    let mut sent = Vec::new();
    for i in 0..20 {
        let (conn, text) = if i % 2 == 0 {
            (&mut alice, format!("from alice {i}"))
        } else {
            (&mut carol, format!("from carol {i}"))
        };
        sent.push((conn.send_msg(bob_id, &text).await, text));
    }
    let sent_ids: Vec<i64> = sent
        .iter()
        .map(|(m, _)| m["id"].as_i64().unwrap())
        .collect();
    assert!(
        sent_ids.windows(2).all(|w| w[0] < w[1]),
        "ids must increase: {sent_ids:?}"
    );
    for (msg, text) in &sent {
        let event = bob.next_event().await;
        assert_eq!(event["id"], msg["id"], "{event}");
        assert_eq!(event["ts"], msg["ts"], "{event}");
        assert_eq!(event["text"], text.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_to_an_offline_user_arrive_at_login_then_synced() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.register("bob").await;

    let mut sent = Vec::new();
    for text in ["one", "two", "three"] {
        sent.push(alice.send_msg(bob_id, text).await);
    }
    let (_, pending) = bob
        .login(json!({"name": "bob", "password": PASSWORD}))
        .await;
    assert_eq!(pending.len(), 3, "{pending:?}");
    for ((event, sent), text) in pending.iter().zip(&sent).zip(["one", "two", "three"]) {
        assert_direct(event, sent, (alice_id, "alice"), bob_id, text);
    }

    // Online now: a new message comes at once, after synced.
    let more = alice.send_msg(bob_id, "four").await;
    let event = bob.next_event().await;
    assert_direct(&event, &more, (alice_id, "alice"), bob_id, "four");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_come_again_after_a_dropped_connection() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;

    // Received online, never acked.
    let first = alice.send_msg(bob_id, "first").await;
    let second = alice.send_msg(bob_id, "second").await;
    assert_eq!(bob.next_msg().await["id"], first["id"]);
    assert_eq!(bob.next_msg().await["id"], second["id"]);
    bob.drop_connection();

    let mut bob = server.connect().await;
    let (_, pending) = bob
        .login(json!({"name": "bob", "password": PASSWORD}))
        .await;
    assert_eq!(
        ids(&json!(pending)),
        vec![
            first["id"].as_i64().unwrap(),
            second["id"].as_i64().unwrap()
        ]
    );
    // Received at login, still not acked: again.
    bob.drop_connection();
    let mut bob = server.connect().await;
    let (_, pending) = bob
        .login(json!({"name": "bob", "password": PASSWORD}))
        .await;
    assert_eq!(pending.len(), 2, "{pending:?}");

    // Acked: never again.
    bob.ok(json!({"op": "ack", "id": second["id"]})).await;
    bob.drop_connection();
    let mut bob = server.connect().await;
    let (_, pending) = bob
        .login(json!({"name": "bob", "password": PASSWORD}))
        .await;
    assert!(pending.is_empty(), "{pending:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_covers_every_message_up_to_its_id() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;

    let sent: Vec<Value> = {
        let mut sent = Vec::new();
        for text in ["m1", "m2", "m3"] {
            sent.push(alice.send_msg(bob_id, text).await);
        }
        sent
    };
    for msg in &sent {
        assert_eq!(bob.next_msg().await["id"], msg["id"]);
    }
    bob.ok(json!({"op": "ack", "id": sent[1]["id"]})).await;

    // A logout without an ack leaves the rest pending, on the same connection too.
    bob.ok(json!({"op": "logout"})).await;
    let (_, pending) = bob
        .login(json!({"name": "bob", "password": PASSWORD}))
        .await;
    assert_eq!(ids(&json!(pending)), vec![sent[2]["id"].as_i64().unwrap()]);
    assert_eq!(pending[0]["text"], "m3");

    bob.ok(json!({"op": "ack", "id": sent[2]["id"]})).await;
    bob.ok(json!({"op": "logout"})).await;
    let (_, pending) = bob
        .login(json!({"name": "bob", "password": PASSWORD}))
        .await;
    assert!(pending.is_empty(), "{pending:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_backwards_through_a_conversation() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (mut carol, carol_id) = server.user("carol").await;

    let mut all = Vec::new();
    for i in 0..5 {
        let text = format!("m{i}");
        let sent = if i % 2 == 0 {
            alice.send_msg(bob_id, &text).await
        } else {
            bob.send_msg(alice_id, &text).await
        };
        all.push(sent["id"].as_i64().unwrap());
    }
    // Another conversation does not show up.
    carol.send_msg(alice_id, "not with bob").await;

    let page = alice
        .ok(json!({"op": "history", "with": bob_id, "limit": 2}))
        .await;
    assert_eq!(ids(&page["messages"]), all[3..5].to_vec(), "{page}");
    let newest = &page["messages"][1];
    assert_eq!(newest["text"], "m4");
    assert_eq!(newest["from"], alice_id);
    assert_eq!(newest["from_name"], "alice");
    assert_eq!(newest["to"], bob_id);
    assert!(newest["ts"].is_i64());
    let older = &page["messages"][0];
    assert_eq!(
        (&older["from"], &older["to"], &older["text"]),
        (&json!(bob_id), &json!(alice_id), &json!("m3"))
    );

    let page = alice
        .ok(json!({"op": "history", "with": bob_id, "limit": 2, "before": all[3]}))
        .await;
    assert_eq!(ids(&page["messages"]), all[1..3].to_vec(), "{page}");
    let page = alice
        .ok(json!({"op": "history", "with": bob_id, "limit": 2, "before": all[1]}))
        .await;
    assert_eq!(ids(&page["messages"]), all[0..1].to_vec(), "{page}");
    let page = alice
        .ok(json!({"op": "history", "with": bob_id, "limit": 2, "before": all[0]}))
        .await;
    assert_eq!(page["messages"], json!([]));

    // Bob sees the same conversation; the default limit covers it all.
    let page = bob.ok(json!({"op": "history", "with": alice_id})).await;
    assert_eq!(ids(&page["messages"]), all, "{page}");
    let page = alice.ok(json!({"op": "history", "with": carol_id})).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1, "{page}");
    // Messages stay after delivery and ack.
    bob.ok(json!({"op": "ack", "id": all[4]})).await;
    let page = bob.ok(json!({"op": "history", "with": alice_id})).await;
    assert_eq!(ids(&page["messages"]), all, "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_limit_defaults_to_50_and_stops_at_100() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.user("alice").await;
    let (_bob, bob_id) = server.register("bob").await;
    let mut all = Vec::new();
    for i in 0..110 {
        all.push(
            alice.send_msg(bob_id, &format!("n{i}")).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let page = alice.ok(json!({"op": "history", "with": bob_id})).await;
    assert_eq!(ids(&page["messages"]), all[60..].to_vec());
    let page = alice
        .ok(json!({"op": "history", "with": bob_id, "limit": 100}))
        .await;
    assert_eq!(ids(&page["messages"]), all[10..].to_vec());
    let page = alice
        .ok(json!({"op": "history", "with": bob_id, "limit": 100, "before": all[10]}))
        .await;
    assert_eq!(ids(&page["messages"]), all[..10].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_never_covers_messages_not_yet_received() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.user("alice").await;
    let (mut bob, bob_id) = server.register("bob").await;

    let first = alice.send_msg(bob_id, "first").await;
    let (_, pending) = bob
        .login(json!({"name": "bob", "password": PASSWORD}))
        .await;
    assert_eq!(ids(&json!(pending)), vec![first["id"].as_i64().unwrap()]);
    // An ack far beyond anything sent covers only what this session received.
    bob.ok(json!({"op": "ack", "id": i64::MAX})).await;
    bob.ok(json!({"op": "logout"})).await;

    let second = alice.send_msg(bob_id, "second").await;
    let (_, pending) = bob
        .login(json!({"name": "bob", "password": PASSWORD}))
        .await;
    assert_eq!(ids(&json!(pending)), vec![second["id"].as_i64().unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_is_the_session_user_and_text_arrives_intact() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (_carol, carol_id) = server.register("carol").await;

    // A forged sender is ignored: the message is alice's.
    // (Control characters but newline and tab are refused: see
    // control_characters_in_text_are_refused_but_newline_and_tab_pass.)
    let text = "line one\nline two\n\ttab \"quoted\" \\ \u{2028} 🎉 ünïcödé";
    let reply = alice
        .ok(json!({"op": "send", "to": bob_id, "text": text, "from": carol_id, "from_name": "carol"}))
        .await;
    let event = bob.next_msg().await;
    assert_direct(&event, &reply["msg"], (alice_id, "alice"), bob_id, text);
    let page = bob.ok(json!({"op": "history", "with": alice_id})).await;
    assert_eq!(page["messages"][0]["text"], text);
    assert_eq!(page["messages"][0]["from"], alice_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pending_messages_all_arrive_in_order() {
    const COUNT: usize = 1200;
    let server = TestServer::start().await;
    let (mut alice, _) = server.user("alice").await;
    let (mut bob, bob_id) = server.register("bob").await;
    let mut sent = Vec::with_capacity(COUNT);
    for i in 0..COUNT {
        sent.push(
            alice.send_msg(bob_id, &format!("pending {i}")).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let (_, pending) = bob
        .login(json!({"name": "bob", "password": PASSWORD}))
        .await;
    assert_eq!(ids(&json!(pending)), sent);
    assert_eq!(pending[COUNT - 1]["text"], format!("pending {}", COUNT - 1));
}

/// A recipient that stops reading is disconnected as a slow consumer once its socket and
/// its queue are full, and loses nothing: at its next login every message arrives, once,
/// in id order. The sender is not held up meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_disconnected_and_loses_nothing() {
    const COUNT: usize = 1200;
    let server = TestServer::start_with(|c| {
        c.outbound_queue = 4;
        c.write_timeout = std::time::Duration::from_millis(300);
        c.max_text = 16 * 1024;
    })
    .await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (mut alice, _) = server.user("alice").await;
    // Bob reads nothing while about 18 MB are sent to him: more than the socket buffers.
    let text = "x".repeat(15_000);
    let mut sent = Vec::with_capacity(COUNT);
    for i in 0..COUNT {
        let msg = alice.send_msg(bob_id, &format!("{i} {text}")).await;
        sent.push(msg["id"].as_i64().unwrap());
    }
    // The server has given up on Bob: his connection ends (after whatever it had
    // written), with `kicked` `slow_consumer` if the line got through.
    let seen = bob.expect_closed().await;
    let kicked: Vec<_> = seen.iter().filter(|e| e["event"] == "kicked").collect();
    assert!(
        kicked.iter().all(|e| e["reason"] == "slow_consumer"),
        "{kicked:?}"
    );
    assert!(
        seen.len() < COUNT,
        "bob was not cut off: got {} frames",
        seen.len()
    );

    let mut bob = server.connect().await;
    let (_, pending) = bob
        .login(serde_json::json!({"name": "bob", "password": PASSWORD}))
        .await;
    let got: Vec<i64> = pending.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert_eq!(got, sent, "every message once, in id order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_text_are_refused_but_newline_and_tab_pass() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let group = alice.create_group("g").await;
    for text in [
        "\u{1b}[2J\u{1b}[Hsystem: password expired",
        "nul\u{0}byte",
        "cr\rover",
    ] {
        alice
            .expect_err(
                json!({"op": "send", "to": bob_id, "text": text}),
                "bad_request",
            )
            .await;
        alice
            .expect_err(
                json!({"op": "group_send", "group": group, "text": text}),
                "bad_request",
            )
            .await;
        alice
            .expect_err(
                json!({"op": "create_group", "name": "x", "desc": text}),
                "bad_request",
            )
            .await;
    }
    // Nothing of it reached bob: his first message is the one that passes, unchanged.
    let sent = alice.send_msg(bob_id, "two\nlines\tand a tab").await;
    let got = bob.next_msg().await;
    assert_eq!(got["id"], sent["id"]);
    assert_eq!(got["text"], "two\nlines\tand a tab");
}
