//! The ops every session starts with: ping, echo, register, login, logout, whoami,
//! users, and how replies carry the request's rid.

use serde_json::{json, Value};

use crate::util::{befriend, find, ids, TestServer, PASSWORD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_echo_work_before_login() {
    let server = TestServer::start().await;
    let mut conn = server.connect().await;
    let reply = conn.ok(json!({"op": "ping"})).await;
    assert_eq!(reply["ok"], true);
    let reply = conn.ok(json!({"op": "echo", "text": "héllo, 世界"})).await;
    assert_eq!(reply["text"], "héllo, 世界");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_gives_ids_and_names_are_unique() {
    let server = TestServer::start().await;
    let mut conn = server.connect().await;
    let alice = conn.register("alice", PASSWORD).await;
    let bob = conn.register("bob", "other password").await;
    assert_ne!(alice, bob);
    conn.expect_err(
        json!({"op": "register", "name": "alice", "password": "x"}),
        "conflict",
    )
    .await;
    // The failed register changed nothing: alice still logs in with her password.
    let reply = conn.login_name("alice", PASSWORD).await;
    assert_eq!(reply["user"], json!({"id": alice, "name": "alice"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_by_name_and_by_id() {
    let server = TestServer::start().await;
    let (mut conn, id) = server.register("alice").await;

    let (reply, pending) = conn
        .login(json!({"name": "alice", "password": PASSWORD}))
        .await;
    assert_eq!(reply["user"], json!({"id": id, "name": "alice"}));
    assert!(!reply["token"].as_str().unwrap().is_empty(), "{reply}");
    assert_eq!(reply["friends"], json!([]));
    assert_eq!(reply["groups"], json!([]));
    assert!(pending.is_empty());

    conn.ok(json!({"op": "logout"})).await;
    let (reply, _) = conn.login(json!({"id": id, "password": PASSWORD})).await;
    assert_eq!(reply["user"], json!({"id": id, "name": "alice"}));
    let me = conn.ok(json!({"op": "whoami"})).await;
    assert_eq!(me["user"], json!({"id": id, "name": "alice"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_with_auth_failed() {
    let server = TestServer::start().await;
    let (mut conn, id) = server.register("alice").await;
    for fields in [
        json!({"name": "alice", "password": "wrong"}),
        json!({"id": id, "password": "wrong"}),
        json!({"name": "nobody", "password": PASSWORD}),
        json!({"id": id + 1000, "password": PASSWORD}),
        json!({"token": "not-a-token"}),
        json!({"token": ""}),
    ] {
        let mut req = json!({"op": "login"});
        for (k, v) in fields.as_object().unwrap() {
            req[k] = v.clone();
        }
        conn.expect_err(req, "auth_failed").await;
    }
    // Still not logged in, and the connection still works.
    conn.expect_err(json!({"op": "whoami"}), "unauthenticated")
        .await;
    conn.login_name("alice", PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_other_than_register_login_ping_echo_need_a_login() {
    let server = TestServer::start().await;
    let (mut conn, id) = server.register("alice").await;
    let ops = [
        json!({"op": "logout"}),
        json!({"op": "whoami"}),
        json!({"op": "users"}),
        json!({"op": "add_friend", "id": id}),
        json!({"op": "remove_friend", "id": id}),
        json!({"op": "friends"}),
        json!({"op": "send", "to": id, "text": "hi"}),
        json!({"op": "create_group", "name": "g", "desc": "d"}),
        json!({"op": "join_group", "group": 1}),
        json!({"op": "leave_group", "group": 1}),
        json!({"op": "delete_group", "group": 1}),
        json!({"op": "groups"}),
        json!({"op": "group_members", "group": 1}),
        json!({"op": "group_send", "group": 1, "text": "hi"}),
        json!({"op": "history", "with": id}),
        json!({"op": "ack", "id": 1}),
    ];
    for op in &ops {
        conn.expect_err(op.clone(), "unauthenticated").await;
    }
    // After a logout, the same again.
    conn.login_name("alice", PASSWORD).await;
    conn.ok(json!({"op": "logout"})).await;
    for op in &ops {
        conn.expect_err(op.clone(), "unauthenticated").await;
    }
    conn.ok(json!({"op": "ping"})).await;
    conn.ok(json!({"op": "echo", "text": "still here"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_keeps_the_connection_and_revokes_the_token() {
    let server = TestServer::start().await;
    let (mut conn, id) = server.register("alice").await;
    let reply = conn.login_name("alice", PASSWORD).await;
    let token = reply["token"].as_str().unwrap().to_string();

    let reply = conn.ok(json!({"op": "logout"})).await;
    assert_eq!(reply["ok"], true);
    conn.expect_err(json!({"op": "whoami"}), "unauthenticated")
        .await;
    conn.ok(json!({"op": "ping"})).await;

    // The token of the ended session no longer works, on any connection.
    let mut other = server.connect().await;
    other
        .expect_err(json!({"op": "login", "token": token}), "auth_failed")
        .await;
    conn.expect_err(json!({"op": "login", "token": token}), "auth_failed")
        .await;

    // The same connection logs in again.
    conn.login_name("alice", PASSWORD).await;
    let me = conn.ok(json!({"op": "whoami"})).await;
    assert_eq!(me["user"], json!({"id": id, "name": "alice"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_resumes_the_session_on_a_new_connection() {
    let server = TestServer::start().await;
    let (mut first, id) = server.register("alice").await;
    let reply = first.login_name("alice", PASSWORD).await;
    let token = reply["token"].as_str().unwrap().to_string();
    first.drop_connection();

    let mut second = server.connect().await;
    let (reply, _) = second.login(json!({"token": token})).await;
    assert_eq!(reply["user"], json!({"id": id, "name": "alice"}));
    assert!(reply["friends"].is_array() && reply["groups"].is_array());
    let me = second.ok(json!({"op": "whoami"})).await;
    assert_eq!(me["user"], json!({"id": id, "name": "alice"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_and_users_online_shows_friends_only() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (_dave, dave_id) = server.user("dave").await; // online, not a friend
    let (_carol_conn, carol_id) = server.register("carol").await; // registered, offline

    let me = alice.ok(json!({"op": "whoami"})).await;
    assert_eq!(me["user"], json!({"id": alice_id, "name": "alice"}));

    // By default `users` shows the friends who are online, and oneself: not strangers.
    let reply = alice.ok(json!({"op": "users"})).await;
    assert_eq!(ids(&reply["users"]), vec![alice_id], "{reply}");
    befriend(&mut alice, alice_id, &mut bob, bob_id).await;
    let reply = alice.ok(json!({"op": "users"})).await;
    let mut online = ids(&reply["users"]);
    online.sort();
    assert_eq!(online, vec![alice_id, bob_id], "{reply}");
    assert!(!online.contains(&carol_id) && !online.contains(&dave_id));
    assert_eq!(find(&reply["users"], bob_id)["name"], "bob");

    // Once bob has logged out, only alice is online.
    bob.ok(json!({"op": "logout"})).await;
    let presence = alice.wait_event("presence").await;
    assert_eq!(
        presence,
        json!({"event": "presence", "user": bob_id, "online": false})
    );
    let reply = alice.ok(json!({"op": "users"})).await;
    assert_eq!(ids(&reply["users"]), vec![alice_id], "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_lists_everyone_online_when_the_operator_allows_it_or_to_admins() {
    let server = TestServer::start_with(|c| c.list_all_users = true).await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (_bob, bob_id) = server.user("bob").await;
    let reply = alice.ok(json!({"op": "users"})).await;
    let mut online = ids(&reply["users"]);
    online.sort();
    assert_eq!(online, vec![alice_id, bob_id], "{reply}");

    let server = TestServer::start_with(|c| c.admins = vec!["root".into()]).await;
    let (mut root, root_id) = server.user("root").await;
    let (mut eve, eve_id) = server.user("eve").await;
    let reply = root.ok(json!({"op": "users"})).await;
    let mut online = ids(&reply["users"]);
    online.sort();
    assert_eq!(online, vec![root_id, eve_id], "{reply}");
    let reply = eve.ok(json!({"op": "users"})).await;
    assert_eq!(ids(&reply["users"]), vec![eve_id], "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_echo_the_rid_verbatim() {
    let server = TestServer::start().await;
    let mut conn = server.connect().await;
    for rid in [
        json!(42),
        json!(0),
        json!(-7),
        json!(9_007_199_254_740_993_u64),
        json!("abc"),
        json!(""),
        json!("with \"quotes\" and ünïcode"),
        Value::Null,
    ] {
        let reply = conn.request(json!({"op": "ping", "rid": rid})).await;
        assert_eq!(reply["rid"], rid, "{reply}");
        assert_eq!(reply["ok"], true, "{reply}");
    }

    // No rid at all: the reply carries `"rid": null`.
    conn.send_raw(b"{\"op\":\"echo\",\"text\":\"no rid\"}\n")
        .await;
    let reply = conn.reply_for(&Value::Null).await;
    assert_eq!(reply["text"], "no rid", "{reply}");
    let raw = reply.as_object().unwrap();
    assert!(
        raw.contains_key("rid"),
        "the reply must carry rid: null: {reply}"
    );

    // A request with bad fields or an unknown op still gets its rid back.
    let reply = conn
        .request(json!({"op": "echo", "rid": "bad-fields", "text": 5}))
        .await;
    assert_eq!(reply["rid"], "bad-fields");
    assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
    let reply = conn.request(json!({"op": "dance", "rid": 77})).await;
    assert_eq!(reply["rid"], 77);
    assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
    let reply = conn
        .request(json!({"op": "whoami", "rid": "needs-login"}))
        .await;
    assert_eq!(reply["rid"], "needs-login");
    assert_eq!(reply["error"]["code"], "unauthenticated", "{reply}");
}

/// The client library (`chat_client`) against the real server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_library_talks_to_the_server() {
    use chat_client::Client;
    use chat_proto::Event;

    let server = TestServer::start().await;
    let (alice, _alice_events) = Client::connect(server.addr()).await.unwrap();
    let (bob, mut bob_events) = Client::connect(server.addr()).await.unwrap();
    let alice_id = alice.register("alice", PASSWORD).await.unwrap().user.id;
    let bob_id = bob.register("bob", PASSWORD).await.unwrap().user.id;
    let login = alice.login_name("alice", PASSWORD).await.unwrap();
    assert_eq!(login.user.id, alice_id);
    let login = bob.login_id(bob_id, PASSWORD).await.unwrap();
    assert_eq!(login.user.name, "bob");
    let synced = tokio::time::timeout(crate::util::WAIT, bob_events.next())
        .await
        .unwrap();
    assert_eq!(synced, Some(Event::Synced));

    let sent = alice.send(bob_id, "hello bob").await.unwrap();
    let event = tokio::time::timeout(crate::util::WAIT, bob_events.next())
        .await
        .unwrap();
    let Some(Event::Msg(msg)) = event else {
        panic!("expected a msg event, got {event:?}");
    };
    assert_eq!((msg.id, msg.ts), (sent.msg.id, sent.msg.ts));
    assert_eq!(
        (msg.from, msg.to, msg.group),
        (alice_id, Some(bob_id), None)
    );
    assert_eq!(msg.text, "hello bob");
    bob.ack(msg.id).await.unwrap();

    let err = alice.send(bob_id, "").await.unwrap_err();
    assert_eq!(err.code(), Some(chat_proto::ErrorCode::BadRequest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_password_revokes_every_earlier_token_unless_told_not_to() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.register("alice").await;
    let (first, _) = alice
        .login(json!({"name": "alice", "password": PASSWORD}))
        .await;
    let old_token = first["token"].clone();

    // The current password is checked.
    let reply = alice
        .request(json!({"op": "change_password", "password": "wrong", "new_password": "n3w"}))
        .await;
    assert_eq!(reply["error"]["code"], "auth_failed", "{reply}");
    alice
        .expect_err(
            json!({"op": "change_password", "password": PASSWORD, "new_password": ""}),
            "bad_request",
        )
        .await;

    let reply = alice
        .ok(json!({"op": "change_password", "password": PASSWORD, "new_password": "n3w"}))
        .await;
    let new_token = reply["token"].clone();
    assert!(new_token.is_string() && new_token != old_token, "{reply}");
    // The session goes on; the old token and password are worthless, the new ones work.
    alice.ok(json!({"op": "whoami"})).await;
    let mut other = server.connect().await;
    let reply = other
        .request(json!({"op": "login", "token": old_token}))
        .await;
    assert_eq!(reply["error"]["code"], "auth_failed", "{reply}");
    let reply = other
        .request(json!({"op": "login", "name": "alice", "password": PASSWORD}))
        .await;
    assert_eq!(reply["error"]["code"], "auth_failed", "{reply}");
    let (reply, _) = other.login(json!({"token": new_token})).await;
    assert_eq!(reply["user"]["name"], "alice");
    let kept_token = reply["token"].clone();

    // Without logout_everywhere, earlier tokens stay valid.
    let reply = other
        .ok(
            json!({"op": "change_password", "password": "n3w", "new_password": "n3w2",
                   "logout_everywhere": false}),
        )
        .await;
    assert!(reply.get("token").is_none(), "{reply}");
    let mut third = server.connect().await;
    third.login(json!({"token": kept_token})).await;
    third.login_name("alice", "n3w2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_ends_the_session_and_every_token() {
    let server = TestServer::start().await;
    let (mut phone, _) = server.register("alice").await;
    let (reply, _) = phone
        .login(json!({"name": "alice", "password": PASSWORD}))
        .await;
    let phone_token = reply["token"].clone();
    // A second device logs in (the phone's session is replaced, its token kept).
    let mut laptop = server.connect().await;
    let (reply, _) = laptop
        .login(json!({"name": "alice", "password": PASSWORD}))
        .await;
    let laptop_token = reply["token"].clone();
    phone.expect_kicked("logged_in_elsewhere").await;

    laptop.ok(json!({"op": "logout_all"})).await;
    // Logged out here...
    laptop
        .expect_err(json!({"op": "whoami"}), "unauthenticated")
        .await;
    // ...and no token of the account works any more, wherever it is kept.
    for token in [phone_token, laptop_token] {
        let mut device = server.connect().await;
        let reply = device.request(json!({"op": "login", "token": token})).await;
        assert_eq!(reply["error"]["code"], "auth_failed", "{reply}");
    }
    // The password still does.
    laptop.login_name("alice", PASSWORD).await;
}
