//! Conversations: per-conversation seqs, delivered and read cursors, the conversation
//! list with unread counts, read receipts, typing, `cmid` de-duplication, catch-up per
//! conversation and `sync`.

use serde_json::{json, Value};

use crate::util::{TestServer, PASSWORD};

fn seq(v: &Value) -> i64 {
    v["seq"].as_i64().unwrap_or_else(|| panic!("no seq in {v}"))
}

fn conv(v: &Value) -> i64 {
    v["conv"]
        .as_i64()
        .unwrap_or_else(|| panic!("no conv in {v}"))
}

/// The seqs of `messages`, in order.
fn seqs(messages: &Value) -> Vec<i64> {
    messages.as_array().unwrap().iter().map(seq).collect()
}

fn texts(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_conversation_numbers_its_messages_from_one_without_gaps() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (_carol, carol_id) = server.user("carol").await;
    let group = alice.create_group("team").await;
    bob.ok(json!({"op": "join_group", "group": group})).await;

    let to_bob: Vec<Value> = {
        let mut out = Vec::new();
        for i in 0..3 {
            out.push(alice.send_msg(bob_id, &format!("b{i}")).await);
        }
        out
    };
    let to_carol = alice.send_msg(carol_id, "c0").await;
    let in_group = alice.group_send(group, "g0").await;
    let back = bob.send_msg(alice_id, "back").await;

    assert_eq!(to_bob.iter().map(seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(seq(&to_carol), 1);
    assert_eq!(seq(&in_group), 1);
    // Both directions of a pair are one conversation.
    assert_eq!(conv(&back), conv(&to_bob[0]));
    assert_eq!(seq(&back), 4);
    assert_ne!(conv(&to_carol), conv(&to_bob[0]));
    assert_eq!(conv(&in_group), -group);

    // Concurrent senders on both sides of one conversation: every seq once, no gap.
    let addr = server.addr();
    let mut senders = Vec::new();
    for (name, to) in [("alice", bob_id), ("bob", alice_id)] {
        senders.push(tokio::spawn(async move {
            let mut conn = crate::util::Conn::connect(addr).await;
            conn.login(json!({"name": name, "password": PASSWORD}))
                .await;
            let mut got = Vec::new();
            for i in 0..40 {
                got.push(seq(&conn.send_msg(to, &format!("{name}{i}")).await));
            }
            got
        }));
    }
    let mut all: Vec<i64> = Vec::new();
    for sender in senders {
        all.extend(sender.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (5..=84).collect::<Vec<_>>());
    let mut bob2 = server.connect().await;
    bob2.login(json!({"name": "bob", "password": PASSWORD}))
        .await;
    let history = bob2
        .ok(json!({"op": "history", "conv": conv(&back), "limit": 100}))
        .await;
    assert_eq!(seqs(&history["messages"]), (1..=84).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_counts_and_read_receipts() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (mut carol, _) = server.user("carol").await;
    for i in 0..3 {
        alice.send_msg(bob_id, &format!("m{i}")).await;
    }
    let last = alice.send_msg(bob_id, "m3").await;
    let c = conv(&last);
    for _ in 0..4 {
        bob.next_msg().await;
    }

    let list = bob.ok(json!({"op": "conversations"})).await;
    let entry = &list["conversations"][0];
    assert_eq!(entry["conv"], c, "{list}");
    assert_eq!(entry["kind"], "direct");
    assert_eq!(entry["peer"]["id"], alice_id);
    assert_eq!(entry["peer"]["online"], true);
    assert_eq!(entry["unread"], 4);
    assert_eq!(entry["read"], 0);
    assert_eq!(entry["last_seq"], 4);
    assert_eq!(entry["last"]["text"], "m3");

    // Bob reads up to 2: Alice gets a receipt; Bob's unread drops; Alice's own messages
    // never count as unread for her.
    let reply = bob.ok(json!({"op": "read", "conv": c, "seq": 2})).await;
    assert_eq!(reply["read"], 2);
    assert_eq!(
        alice.wait_event("read").await,
        json!({"event": "read", "conv": c, "user": bob_id, "seq": 2})
    );
    let list = bob.ok(json!({"op": "conversations"})).await;
    assert_eq!(list["conversations"][0]["unread"], 2);
    let list = alice.ok(json!({"op": "conversations"})).await;
    assert_eq!(list["conversations"][0]["unread"], 0, "{list}");
    assert_eq!(list["conversations"][0]["peer_read"], 2);
    // A read never moves back, nor past the end.
    let reply = bob.ok(json!({"op": "read", "conv": c, "seq": 1})).await;
    assert_eq!(reply["read"], 2);
    let reply = bob.ok(json!({"op": "read", "conv": c, "seq": 99})).await;
    assert_eq!(reply["read"], 4);
    assert_eq!(alice.wait_event("read").await["seq"], 4);
    // Not Carol's conversation.
    carol
        .expect_err(json!({"op": "read", "conv": c, "seq": 1}), "not_found")
        .await;

    // A group: a receipt goes to the senders of what was read, not to every member.
    let group = alice.create_group("g").await;
    bob.ok(json!({"op": "join_group", "group": group})).await;
    carol.ok(json!({"op": "join_group", "group": group})).await;
    let sent = carol.group_send(group, "hello").await;
    let list = bob.ok(json!({"op": "conversations"})).await;
    let g = &list["conversations"][0];
    assert_eq!(g["conv"], -group, "{list}");
    assert_eq!(g["kind"], "group");
    assert_eq!(g["unread"], 1);
    bob.ok(json!({"op": "read", "conv": -group, "seq": seq(&sent)}))
        .await;
    let receipt = carol.wait_event("read").await;
    assert_eq!(receipt["user"], bob_id);
    assert_eq!(receipt["conv"], -group);
    // Alice sent nothing in the group: a ping round trip shows no receipt came to her.
    alice.ok(json!({"op": "ping"})).await;
    assert!(
        alice.buffered_events().iter().all(|e| e["event"] != "read"),
        "{:?}",
        alice.buffered_events()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_the_other_members_and_is_rate_limited() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (mut carol, _) = server.user("carol").await;
    let c = conv(&alice.send_msg(bob_id, "hi").await);
    alice.ok(json!({"op": "typing", "conv": c})).await;
    let typing = bob.wait_event("typing").await;
    assert_eq!(
        typing,
        json!({"event": "typing", "conv": c, "user": alice_id, "name": "alice"})
    );
    carol
        .expect_err(json!({"op": "typing", "conv": c}), "not_found")
        .await;

    let group = alice.create_group("g").await;
    bob.ok(json!({"op": "join_group", "group": group})).await;
    bob.ok(json!({"op": "typing", "conv": -group})).await;
    let typing = alice.wait_event("typing").await;
    assert_eq!(typing["group"], group);
    assert_eq!(typing["user"], bob_id);

    // A burst past the limit is refused.
    let mut refused = false;
    for _ in 0..10 {
        let reply = bob.request(json!({"op": "typing", "conv": -group})).await;
        if reply["ok"] == false {
            assert_eq!(reply["error"]["code"], "rate_limited", "{reply}");
            refused = true;
            break;
        }
    }
    assert!(refused, "ten typing events at once were all accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_with_the_same_cmid_makes_no_second_message() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let group = alice.create_group("g").await;
    bob.ok(json!({"op": "join_group", "group": group})).await;

    let first = alice
        .ok(json!({"op": "send", "to": bob_id, "text": "once", "cmid": "c-1"}))
        .await;
    // The connection drops before the client saw the reply; it resends on a new one.
    alice.drop_connection();
    let mut again = server.connect().await;
    again
        .login(json!({"name": "alice", "password": PASSWORD}))
        .await;
    let second = again
        .ok(json!({"op": "send", "to": bob_id, "text": "once", "cmid": "c-1"}))
        .await;
    assert_eq!(second["msg"], first["msg"]);
    let g1 = again
        .ok(json!({"op": "group_send", "group": group, "text": "g", "cmid": "c-2"}))
        .await;
    let g2 = again
        .ok(json!({"op": "group_send", "group": group, "text": "g", "cmid": "c-2"}))
        .await;
    assert_eq!(g1["msg"], g2["msg"]);
    // Another cmid is another message.
    let other = again
        .ok(json!({"op": "send", "to": bob_id, "text": "twice", "cmid": "c-3"}))
        .await;
    assert_eq!(seq(&other["msg"]), seq(&first["msg"]) + 1);

    // Bob got each message once.
    let got: Vec<Value> = vec![
        bob.next_msg().await,
        bob.next_msg().await,
        bob.next_msg().await,
    ];
    assert_eq!(texts(&got), vec!["once", "g", "twice"]);
    let history = bob
        .ok(json!({"op": "history", "conv": first["msg"]["conv"]}))
        .await;
    assert_eq!(
        history["messages"].as_array().unwrap().len(),
        2,
        "{history}"
    );
    again
        .expect_err(
            json!({"op": "send", "to": bob_id, "text": "x", "cmid": "x".repeat(65)}),
            "bad_request",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_is_per_conversation_and_acks_by_id_or_by_seq() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.user("alice").await;
    let (mut carol, _) = server.user("carol").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let group = alice.create_group("g").await;
    bob.ok(json!({"op": "join_group", "group": group})).await;
    bob.ok(json!({"op": "logout"})).await;

    let a1 = alice.send_msg(bob_id, "a1").await;
    let c1 = carol.send_msg(bob_id, "c1").await;
    let a2 = alice.send_msg(bob_id, "a2").await;
    let g1 = alice.group_send(group, "g1").await;

    // Everything pending, in order, with conv and seq.
    let (_, pending) = bob
        .login(json!({"name": "bob", "password": PASSWORD}))
        .await;
    assert_eq!(texts(&pending), vec!["a1", "c1", "a2", "g1"]);
    assert_eq!(pending[2]["seq"], 2);
    assert_eq!(pending[2]["conv"], a2["conv"]);
    assert_eq!(pending[3]["conv"], -group);

    // v1 ack by id: everything this session got up to c1's id (a1 and c1).
    bob.ok(json!({"op": "ack", "id": c1["id"]})).await;
    // By conversation: the group up to g1.
    bob.ok(json!({"op": "ack", "conv": -group, "seq": g1["seq"]}))
        .await;
    bob.ok(json!({"op": "logout"})).await;
    let (_, pending) = bob
        .login(json!({"name": "bob", "password": PASSWORD}))
        .await;
    assert_eq!(texts(&pending), vec!["a2"], "{pending:?}");
    assert_eq!(a1["conv"], a2["conv"]);

    bob.expect_err(json!({"op": "ack", "conv": 5}), "bad_request")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_returns_what_follows_the_clients_positions() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (mut carol, _) = server.user("carol").await;
    let group = alice.create_group("g").await;
    bob.ok(json!({"op": "join_group", "group": group})).await;
    let mut direct = 0;
    for i in 0..5 {
        direct = conv(&alice.send_msg(bob_id, &format!("d{i}")).await);
    }
    for i in 0..3 {
        alice.group_send(group, &format!("g{i}")).await;
    }
    let reply = bob
        .ok(json!({"op": "sync", "positions": [
            {"conv": direct, "seq": 3}, {"conv": -group, "seq": 0}]}))
        .await;
    let got: Vec<Value> = reply["messages"].as_array().unwrap().clone();
    assert_eq!(texts(&got), vec!["d3", "d4", "g0", "g1", "g2"]);
    assert_eq!(reply["more"], false);
    let reply = bob
        .ok(json!({"op": "sync", "positions": [{"conv": direct, "seq": 0}], "limit": 2}))
        .await;
    assert_eq!(seqs(&reply["messages"]), vec![1, 2]);
    assert_eq!(reply["more"], true);
    // Conversations that are not the caller's give nothing.
    let reply = carol
        .ok(json!({"op": "sync", "positions": [{"conv": direct, "seq": 0}, {"conv": -group, "seq": 0}]}))
        .await;
    assert_eq!(reply["messages"], json!([]));
}
