//! Friends: mutual friendship, `friend_added` and `friend_removed` events, presence.

use serde_json::json;

use crate::util::{find, TestServer, PASSWORD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_friend_is_mutual_and_tells_the_other() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;

    let reply = alice.ok(json!({"op": "add_friend", "id": bob_id})).await;
    assert_eq!(
        reply["friend"],
        json!({"id": bob_id, "name": "bob", "online": true})
    );
    let event = bob.wait_event("friend_added").await;
    assert_eq!(
        event,
        json!({"event": "friend_added", "friend": {"id": alice_id, "name": "alice", "online": true}})
    );

    let reply = alice.ok(json!({"op": "friends"})).await;
    assert_eq!(
        reply["friends"],
        json!([{"id": bob_id, "name": "bob", "online": true}])
    );
    let reply = bob.ok(json!({"op": "friends"})).await;
    assert_eq!(
        reply["friends"],
        json!([{"id": alice_id, "name": "alice", "online": true}])
    );

    // Already friends, from either side.
    alice
        .expect_err(json!({"op": "add_friend", "id": bob_id}), "conflict")
        .await;
    bob.expect_err(json!({"op": "add_friend", "id": alice_id}), "conflict")
        .await;
    // No such user.
    alice
        .expect_err(
            json!({"op": "add_friend", "id": bob_id + 1000}),
            "not_found",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_friend_added_while_offline_sees_it_at_login() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.register("bob").await;

    let reply = alice.ok(json!({"op": "add_friend", "id": bob_id})).await;
    assert_eq!(
        reply["friend"],
        json!({"id": bob_id, "name": "bob", "online": false})
    );

    let reply = bob.login_name("bob", PASSWORD).await;
    assert_eq!(
        reply["friends"],
        json!([{"id": alice_id, "name": "alice", "online": true}])
    );
    let presence = alice.wait_event("presence").await;
    assert_eq!(
        presence,
        json!({"event": "presence", "user": bob_id, "online": true})
    );
    let reply = alice.ok(json!({"op": "friends"})).await;
    assert_eq!(find(&reply["friends"], bob_id)["online"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_friend_ends_it_for_both() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (_carol, carol_id) = server.register("carol").await;
    alice.ok(json!({"op": "add_friend", "id": bob_id})).await;
    bob.wait_event("friend_added").await;

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
    bob.ok(json!({"op": "add_friend", "id": alice_id})).await;
    let event = alice.wait_event("friend_added").await;
    assert_eq!(event["friend"]["id"], bob_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_login_logout_and_disconnect() {
    let server = TestServer::start().await;
    let (mut alice, _alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    alice.ok(json!({"op": "add_friend", "id": bob_id})).await;
    bob.wait_event("friend_added").await;

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
    let (mut bob, bob_id) = server.register("bob").await;
    alice.ok(json!({"op": "add_friend", "id": bob_id})).await;

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
