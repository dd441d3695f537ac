//! Friends with consent: requests, acceptance, declines, blocks, `friend_added` and
//! `friend_removed` events, and presence, which only friends see.

use serde_json::json;

use crate::util::{befriend, find, TestServer, PASSWORD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_friend_request_becomes_a_friendship_when_the_other_accepts() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;

    // Alice asks: no friendship yet, bob is told who asks.
    let reply = alice.ok(json!({"op": "add_friend", "id": bob_id})).await;
    assert_eq!(reply["requested"], true, "{reply}");
    assert!(reply.get("friend").is_none(), "{reply}");
    let event = bob.wait_event("friend_request").await;
    assert_eq!(
        event,
        json!({"event": "friend_request", "from": {"id": alice_id, "name": "alice"}})
    );
    assert_eq!(
        alice.ok(json!({"op": "friends"})).await["friends"],
        json!([])
    );
    assert_eq!(bob.ok(json!({"op": "friends"})).await["friends"], json!([]));
    let reply = alice.ok(json!({"op": "friend_requests"})).await;
    assert_eq!(reply["incoming"], json!([]));
    assert_eq!(reply["outgoing"], json!([{"id": bob_id, "name": "bob"}]));
    let reply = bob.ok(json!({"op": "friend_requests"})).await;
    assert_eq!(
        reply["incoming"],
        json!([{"id": alice_id, "name": "alice"}])
    );
    assert_eq!(reply["outgoing"], json!([]));
    // Asking twice is a conflict.
    alice
        .expect_err(json!({"op": "add_friend", "id": bob_id}), "conflict")
        .await;

    // Bob accepts by asking back: both are friends, alice is told.
    let reply = bob.ok(json!({"op": "add_friend", "id": alice_id})).await;
    assert_eq!(
        reply["friend"],
        json!({"id": alice_id, "name": "alice", "online": true})
    );
    let event = alice.wait_event("friend_added").await;
    assert_eq!(
        event,
        json!({"event": "friend_added", "friend": {"id": bob_id, "name": "bob", "online": true}})
    );
    assert_eq!(
        alice.ok(json!({"op": "friends"})).await["friends"],
        json!([{"id": bob_id, "name": "bob", "online": true}])
    );
    assert_eq!(
        bob.ok(json!({"op": "friends"})).await["friends"],
        json!([{"id": alice_id, "name": "alice", "online": true}])
    );
    let reply = bob.ok(json!({"op": "friend_requests"})).await;
    assert_eq!(reply["incoming"], json!([]));

    // Already friends, from either side.
    alice
        .expect_err(json!({"op": "add_friend", "id": bob_id}), "conflict")
        .await;
    bob.expect_err(json!({"op": "add_friend", "id": alice_id}), "conflict")
        .await;
    // No such user, or oneself.
    alice
        .expect_err(
            json!({"op": "add_friend", "id": bob_id + 1000}),
            "not_found",
        )
        .await;
    alice
        .expect_err(json!({"op": "add_friend", "id": alice_id}), "bad_request")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_request_makes_no_friendship() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;

    alice.ok(json!({"op": "add_friend", "id": bob_id})).await;
    bob.wait_event("friend_request").await;
    bob.ok(json!({"op": "decline_friend", "id": alice_id}))
        .await;
    // Nothing left to decline, and nothing pending either way.
    bob.expect_err(json!({"op": "decline_friend", "id": alice_id}), "not_found")
        .await;
    let reply = alice.ok(json!({"op": "friend_requests"})).await;
    assert_eq!(reply["outgoing"], json!([]), "{reply}");
    // Bob's later add_friend is a new request, not an acceptance.
    let reply = bob.ok(json!({"op": "add_friend", "id": alice_id})).await;
    assert_eq!(reply["requested"], true, "{reply}");
    alice.wait_event("friend_request").await;
    assert_eq!(
        alice.ok(json!({"op": "friends"})).await["friends"],
        json!([])
    );
    // A request can be withdrawn by its sender.
    bob.ok(json!({"op": "remove_friend", "id": alice_id})).await;
    let reply = alice.ok(json!({"op": "friend_requests"})).await;
    assert_eq!(reply["incoming"], json!([]), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_made_while_offline_is_seen_at_login() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.register("bob").await;

    let reply = alice.ok(json!({"op": "add_friend", "id": bob_id})).await;
    assert_eq!(reply["requested"], true, "{reply}");

    let reply = bob.login_name("bob", PASSWORD).await;
    assert_eq!(reply["friends"], json!([]), "{reply}");
    let requests = bob.ok(json!({"op": "friend_requests"})).await;
    assert_eq!(
        requests["incoming"],
        json!([{"id": alice_id, "name": "alice"}])
    );
    // Not yet friends: alice saw no presence for bob's login. Accepting shows it.
    bob.ok(json!({"op": "add_friend", "id": alice_id})).await;
    let event = alice.next_event().await;
    assert_eq!(event["event"], "friend_added", "alice got {event}");
    assert_eq!(event["friend"]["online"], true);
    let reply = alice.ok(json!({"op": "friends"})).await;
    assert_eq!(find(&reply["friends"], bob_id)["online"], true);
    bob.drop_connection();
    assert_eq!(
        alice.next_event().await,
        json!({"event": "presence", "user": bob_id, "online": false})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_refuses_messages_and_requests_and_ends_the_friendship() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut mallory, mallory_id) = server.user("mallory").await;
    let (mut carol, carol_id) = server.user("carol").await;
    befriend(&mut alice, alice_id, &mut mallory, mallory_id).await;

    alice.ok(json!({"op": "block", "id": mallory_id})).await;
    // Mallory learns only that the friendship ended.
    let event = mallory.wait_event("friend_removed").await;
    assert_eq!(event, json!({"event": "friend_removed", "user": alice_id}));
    assert_eq!(
        alice.ok(json!({"op": "friends"})).await["friends"],
        json!([])
    );
    assert_eq!(
        alice.ok(json!({"op": "blocked"})).await["users"],
        json!([{"id": mallory_id, "name": "mallory"}])
    );
    alice
        .expect_err(json!({"op": "block", "id": mallory_id}), "conflict")
        .await;

    // Her messages and requests get a plain refusal, and alice receives nothing.
    mallory
        .expect_refused(json!({"op": "send", "to": alice_id, "text": "let me in"}))
        .await;
    mallory
        .expect_refused(json!({"op": "add_friend", "id": alice_id}))
        .await;
    // Alice cannot write to someone she blocks without unblocking first.
    alice
        .expect_err(
            json!({"op": "send", "to": mallory_id, "text": "x"}),
            "forbidden",
        )
        .await;
    // Others are not affected.
    mallory.send_msg(carol_id, "hello carol").await;
    assert_eq!(carol.next_msg().await["text"], "hello carol");

    // Alice's first event is the message sent after the unblock: nothing came through.
    alice.ok(json!({"op": "unblock", "id": mallory_id})).await;
    alice
        .expect_err(json!({"op": "unblock", "id": mallory_id}), "not_found")
        .await;
    assert_eq!(alice.ok(json!({"op": "blocked"})).await["users"], json!([]));
    mallory.send_msg(alice_id, "sorry").await;
    let event = alice.next_event().await;
    assert_eq!(event["event"], "msg", "alice got {event}");
    assert_eq!(event["text"], "sorry");
    // The friendship is not restored by the unblock.
    assert_eq!(
        alice.ok(json!({"op": "friends"})).await["friends"],
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_survives_a_restart() {
    let mut server = TestServer::start().await;
    let (mut alice, _alice_id) = server.user("alice").await;
    let (_mallory, mallory_id) = server.user("mallory").await;
    alice.ok(json!({"op": "block", "id": mallory_id})).await;
    drop(alice);
    server.restart().await;
    let mut mallory = server.connect().await;
    mallory.login_name("mallory", PASSWORD).await;
    let (_alice, alice_id) = {
        let mut alice = server.connect().await;
        let reply = alice.login_name("alice", PASSWORD).await;
        let id = reply["user"]["id"].as_i64().expect("user id");
        (alice, id)
    };
    mallory
        .expect_refused(json!({"op": "send", "to": alice_id, "text": "again"}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_friend_ends_it_for_both() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (_carol, carol_id) = server.register("carol").await;
    befriend(&mut alice, alice_id, &mut bob, bob_id).await;

    alice.ok(json!({"op": "remove_friend", "id": bob_id})).await;
    let event = bob.wait_event("friend_removed").await;
    assert_eq!(event, json!({"event": "friend_removed", "user": alice_id}));
    assert_eq!(
        alice.ok(json!({"op": "friends"})).await["friends"],
        json!([])
    );
    assert_eq!(bob.ok(json!({"op": "friends"})).await["friends"], json!([]));

    // Not a friend (any more, or never), or no such user.
    alice
        .expect_err(json!({"op": "remove_friend", "id": bob_id}), "not_found")
        .await;
    bob.expect_err(json!({"op": "remove_friend", "id": alice_id}), "not_found")
        .await;
    alice
        .expect_err(json!({"op": "remove_friend", "id": carol_id}), "not_found")
        .await;
    alice
        .expect_err(
            json!({"op": "remove_friend", "id": carol_id + 1000}),
            "not_found",
        )
        .await;

    // They can be friends again, from the other side this time.
    befriend(&mut bob, bob_id, &mut alice, alice_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_login_logout_and_disconnect() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    befriend(&mut alice, alice_id, &mut bob, bob_id).await;

    bob.ok(json!({"op": "logout"})).await;
    assert_eq!(
        alice.next_event().await,
        json!({"event": "presence", "user": bob_id, "online": false})
    );
    let reply = alice.ok(json!({"op": "friends"})).await;
    assert_eq!(find(&reply["friends"], bob_id)["online"], false);

    bob.login_name("bob", PASSWORD).await;
    assert_eq!(
        alice.next_event().await,
        json!({"event": "presence", "user": bob_id, "online": true})
    );

    bob.drop_connection();
    assert_eq!(
        alice.next_event().await,
        json!({"event": "presence", "user": bob_id, "online": false})
    );
    let reply = alice.ok(json!({"op": "friends"})).await;
    assert_eq!(find(&reply["friends"], bob_id)["online"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_goes_only_to_friends() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut carol, carol_id) = server.user("carol").await; // not a friend of bob
    let (mut bob, bob_id) = server.user("bob").await;
    befriend(&mut alice, alice_id, &mut bob, bob_id).await;
    bob.drop_connection();
    alice.wait_event("presence").await;

    let mut bob = server.connect().await;
    bob.login_name("bob", PASSWORD).await;
    alice.wait_event("presence").await;
    bob.drop_connection();
    alice.wait_event("presence").await;

    // Carol saw nothing of it: the first event she gets is alice's message.
    alice.send_msg(carol_id, "hi").await;
    let event = carol.next_event().await;
    assert_eq!(event["event"], "msg", "carol got {event}");
    assert_eq!(event["from"], alice_id);
}
