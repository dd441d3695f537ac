//! Groups: create, join, leave, delete, members, listing, group messages and history.

use serde_json::{json, Value};

use crate::util::{find, ids, TestServer, PASSWORD};

/// The member `id` of a `members` list, as `(name, role, online)`.
fn member(members: &Value, id: i64) -> (String, String, bool) {
    let m = find(members, id);
    (
        m["name"].as_str().unwrap().to_string(),
        m["role"].as_str().unwrap().to_string(),
        m["online"].as_bool().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_join_a_group() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;

    let reply = alice
        .ok(
            json!({"op": "create_group", "name": "rustaceans", "desc": "all things rust",
                   "open": true}),
        )
        .await;
    let group = reply["group"]["id"].as_i64().unwrap();
    assert_eq!(
        reply["group"],
        json!({"id": group, "name": "rustaceans", "desc": "all things rust", "role": "creator",
               "open": true, "shared_history": false})
    );
    // desc is optional; by default a group is closed and keeps its history from newcomers.
    let reply = bob.ok(json!({"op": "create_group", "name": "plain"})).await;
    assert_eq!(reply["group"]["desc"], "", "{reply}");
    assert_eq!(reply["group"]["role"], "creator");
    assert_eq!(reply["group"]["open"], false);
    assert_eq!(reply["group"]["shared_history"], false);
    let closed = reply["group"]["id"].as_i64().unwrap();
    assert_ne!(closed, group);
    // A closed group cannot be told from a missing one by someone not invited.
    alice
        .expect_err(json!({"op": "join_group", "group": closed}), "not_found")
        .await;

    let reply = bob.ok(json!({"op": "join_group", "group": group})).await;
    assert_eq!(
        reply["group"],
        json!({"id": group, "name": "rustaceans", "desc": "all things rust", "role": "member",
               "open": true, "shared_history": false})
    );
    let joined = alice.wait_event("member_joined").await;
    assert_eq!(
        joined,
        json!({"event": "member_joined", "group": group, "user": {"id": bob_id, "name": "bob"}})
    );
    bob.expect_err(json!({"op": "join_group", "group": group}), "conflict")
        .await;
    alice
        .expect_err(json!({"op": "join_group", "group": group}), "conflict")
        .await;
    bob.expect_err(
        json!({"op": "join_group", "group": group + 1000}),
        "not_found",
    )
    .await;

    for conn in [&mut alice, &mut bob] {
        let reply = conn
            .ok(json!({"op": "group_members", "group": group}))
            .await;
        let members = &reply["members"];
        assert_eq!(members.as_array().unwrap().len(), 2, "{reply}");
        assert_eq!(
            member(members, alice_id),
            ("alice".into(), "creator".into(), true)
        );
        assert_eq!(
            member(members, bob_id),
            ("bob".into(), "member".into(), true)
        );
    }

    let reply = alice.ok(json!({"op": "groups"})).await;
    assert_eq!(ids(&reply["groups"]), vec![group], "{reply}");
    let listed = &reply["groups"][0];
    assert_eq!(listed["name"], "rustaceans");
    assert_eq!(listed["desc"], "all things rust");
    assert_eq!(listed["role"], "creator");
    assert_eq!(member(&listed["members"], bob_id).1, "member");

    let reply = bob.ok(json!({"op": "groups"})).await;
    let mut bobs = ids(&reply["groups"]);
    bobs.sort();
    assert_eq!(bobs.len(), 2, "{reply}");
    assert_eq!(find(&reply["groups"], group)["role"], "member");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_reply_lists_groups_with_members() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.register("bob").await;
    let (mut carol, carol_id) = server.register("carol").await;
    let group = alice.create_group("club").await;
    carol.login_name("carol", PASSWORD).await;
    carol.ok(json!({"op": "join_group", "group": group})).await;
    carol.ok(json!({"op": "logout"})).await;

    // Bob joins over a first login, then logs in again to see the login reply.
    bob.login_name("bob", PASSWORD).await;
    bob.ok(json!({"op": "join_group", "group": group})).await;
    bob.ok(json!({"op": "logout"})).await;
    let reply = bob.login_name("bob", PASSWORD).await;
    let groups = &reply["groups"];
    assert_eq!(ids(groups), vec![group], "{reply}");
    let g = &groups[0];
    assert_eq!(
        (&g["name"], &g["desc"], &g["role"]),
        (&json!("club"), &json!("about club"), &json!("member"))
    );
    let members = &g["members"];
    assert_eq!(members.as_array().unwrap().len(), 3, "{reply}");
    assert_eq!(
        member(members, alice_id),
        ("alice".into(), "creator".into(), true)
    );
    assert_eq!(
        member(members, bob_id),
        ("bob".into(), "member".into(), true)
    );
    assert_eq!(
        member(members, carol_id),
        ("carol".into(), "member".into(), false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_members_are_forbidden() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.user("alice").await;
    let (mut eve, _) = server.user("eve").await;
    let group = alice.create_group("private").await;
    alice.group_send(group, "members only").await;

    eve.expect_err(json!({"op": "group_members", "group": group}), "forbidden")
        .await;
    eve.expect_err(
        json!({"op": "group_send", "group": group, "text": "let me in"}),
        "forbidden",
    )
    .await;
    eve.expect_err(json!({"op": "history", "group": group}), "forbidden")
        .await;
    eve.expect_err(json!({"op": "delete_group", "group": group}), "forbidden")
        .await;

    // A member who is not the creator may not delete; the creator may not leave.
    eve.ok(json!({"op": "join_group", "group": group})).await;
    eve.expect_err(json!({"op": "delete_group", "group": group}), "forbidden")
        .await;
    alice
        .expect_err(json!({"op": "leave_group", "group": group}), "forbidden")
        .await;
    // Nothing changed.
    let reply = alice
        .ok(json!({"op": "group_members", "group": group}))
        .await;
    assert_eq!(reply["members"].as_array().unwrap().len(), 2, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_message_reaches_every_member_but_the_sender() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (mut carol, _) = server.user("carol").await;
    let (mut dave, _) = server.user("dave").await;
    let (mut outsider, _) = server.user("outsider").await;
    let group = alice.create_group("team").await;
    for conn in [&mut bob, &mut carol, &mut dave] {
        conn.ok(json!({"op": "join_group", "group": group})).await;
    }
    dave.ok(json!({"op": "logout"})).await;

    let sent = bob.group_send(group, "hello team").await;
    let expected = json!({
        "event": "msg",
        "id": sent["id"],
        "ts": sent["ts"],
        "from": bob_id,
        "from_name": "bob",
        "text": "hello team",
        "group": group,
        "conv": -group,
        "seq": sent["seq"],
    });
    for conn in [&mut alice, &mut carol] {
        let mut event = conn.wait_event("msg").await;
        if event.get("to") == Some(&Value::Null) {
            event.as_object_mut().unwrap().remove("to");
        }
        assert_eq!(event, expected);
    }

    // Dave, offline, gets it at the next login; then acks it.
    let (_, pending) = dave
        .login(json!({"name": "dave", "password": PASSWORD}))
        .await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["id"], sent["id"]);
    assert_eq!(pending[0]["group"], group);
    dave.ok(json!({"op": "ack", "id": sent["id"]})).await;

    // The sender and the outsider got nothing: their first msg is a direct one (bob has
    // member_joined events before it).
    let marker = alice.send_msg(bob_id, "marker").await;
    assert_eq!(bob.next_msg().await["id"], marker["id"]);
    let marker = bob.send_msg(alice_id, "marker").await;
    assert_eq!(alice.next_msg().await["id"], marker["id"]);
    let outsider_id = outsider.ok(json!({"op": "whoami"})).await["user"]["id"].clone();
    let marker = alice
        .send_msg(outsider_id.as_i64().unwrap(), "marker")
        .await;
    assert_eq!(outsider.next_event().await["id"], marker["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_leaves_gets_no_more_messages() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, _) = server.user("bob").await;
    let (mut carol, carol_id) = server.user("carol").await;
    let group = alice.create_group("team").await;
    bob.ok(json!({"op": "join_group", "group": group})).await;
    carol.ok(json!({"op": "join_group", "group": group})).await;

    carol.ok(json!({"op": "leave_group", "group": group})).await;
    assert_eq!(carol.ok(json!({"op": "groups"})).await["groups"], json!([]));
    let reply = alice
        .ok(json!({"op": "group_members", "group": group}))
        .await;
    let mut members = ids(&reply["members"]);
    members.sort();
    assert!(!members.contains(&carol_id), "{reply}");
    carol
        .expect_err(
            json!({"op": "group_send", "group": group, "text": "still here?"}),
            "forbidden",
        )
        .await;

    let sent = alice.group_send(group, "after carol left").await;
    assert_eq!(bob.next_msg().await["id"], sent["id"]);
    let marker = alice.send_msg(carol_id, "direct").await;
    let event = carol.next_event().await;
    assert_eq!(event["id"], marker["id"], "carol got {event}");

    // She can join again and gets messages again.
    carol.ok(json!({"op": "join_group", "group": group})).await;
    let sent = alice.group_send(group, "welcome back").await;
    let event = carol.next_msg().await;
    assert_eq!(event["id"], sent["id"]);
    assert_eq!(event["from"], alice_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_group_tells_its_online_members() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.user("alice").await;
    let (mut bob, _) = server.user("bob").await;
    let (mut carol, _) = server.user("carol").await;
    let group = alice.create_group("doomed").await;
    let other = alice.create_group("kept").await;
    bob.ok(json!({"op": "join_group", "group": group})).await;
    bob.ok(json!({"op": "join_group", "group": other})).await;
    carol.ok(json!({"op": "join_group", "group": group})).await;

    bob.expect_err(json!({"op": "delete_group", "group": group}), "forbidden")
        .await;
    alice
        .ok(json!({"op": "delete_group", "group": group}))
        .await;
    for conn in [&mut bob, &mut carol] {
        assert_eq!(
            conn.wait_event("group_deleted").await,
            json!({"event": "group_deleted", "group": group})
        );
    }

    assert_eq!(
        ids(&alice.ok(json!({"op": "groups"})).await["groups"]),
        vec![other]
    );
    assert_eq!(
        ids(&bob.ok(json!({"op": "groups"})).await["groups"]),
        vec![other]
    );
    assert_eq!(carol.ok(json!({"op": "groups"})).await["groups"], json!([]));
    carol
        .expect_err(json!({"op": "join_group", "group": group}), "not_found")
        .await;
    let code = carol
        .err(json!({"op": "group_send", "group": group, "text": "anyone?"}))
        .await;
    assert!(code == "not_found" || code == "forbidden", "{code}");
    let code = alice
        .err(json!({"op": "delete_group", "group": group}))
        .await;
    assert!(code == "not_found" || code == "forbidden", "{code}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_history_pages_backwards() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let group = alice.create_group("log").await;
    bob.ok(json!({"op": "join_group", "group": group})).await;

    let mut all = Vec::new();
    for i in 0..5 {
        let sent = if i % 2 == 0 {
            alice.group_send(group, &format!("g{i}")).await
        } else {
            bob.group_send(group, &format!("g{i}")).await
        };
        all.push(sent["id"].as_i64().unwrap());
    }
    // A one-to-one message between members is not group history.
    alice.send_msg(bob_id, "direct").await;

    let page = bob
        .ok(json!({"op": "history", "group": group, "limit": 3}))
        .await;
    assert_eq!(ids(&page["messages"]), all[2..].to_vec(), "{page}");
    let newest = &page["messages"][2];
    assert_eq!(
        (
            &newest["from"],
            &newest["from_name"],
            &newest["text"],
            &newest["group"]
        ),
        (
            &json!(alice_id),
            &json!("alice"),
            &json!("g4"),
            &json!(group)
        )
    );
    let page = bob
        .ok(json!({"op": "history", "group": group, "limit": 3, "before": all[2]}))
        .await;
    assert_eq!(ids(&page["messages"]), all[..2].to_vec(), "{page}");
    let page = alice.ok(json!({"op": "history", "group": group})).await;
    assert_eq!(ids(&page["messages"]), all, "{page}");
}

/// Pending group messages follow membership: nothing from before joining, nothing
/// after leaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_group_messages_follow_membership() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.user("alice").await;
    let (mut carol, _) = server.user("carol").await;
    let group = alice.create_group("club").await;
    alice.group_send(group, "before carol joined").await;

    carol.ok(json!({"op": "join_group", "group": group})).await;
    carol.ok(json!({"op": "logout"})).await;
    let while_away = alice.group_send(group, "while carol is away").await;
    let (_, pending) = carol
        .login(json!({"name": "carol", "password": PASSWORD}))
        .await;
    assert_eq!(
        ids(&json!(pending)),
        vec![while_away["id"].as_i64().unwrap()],
        "{pending:?}"
    );

    carol.ok(json!({"op": "ack", "id": while_away["id"]})).await;
    carol.ok(json!({"op": "leave_group", "group": group})).await;
    carol.ok(json!({"op": "logout"})).await;
    alice.group_send(group, "after carol left").await;
    let (_, pending) = carol
        .login(json!({"name": "carol", "password": PASSWORD}))
        .await;
    assert!(pending.is_empty(), "{pending:?}");
}

/// Security issue 11, item 1: a deleted group's id used to go to the next group created,
/// whose members then read the deleted group's history and pending messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_groups_id_and_history_never_come_back() {
    let mut server = TestServer::start().await;
    let (mut alice, _) = server.user("alice").await;
    let (mut bob, _) = server.user("bob").await;
    let old = alice.create_group("secret plans").await;
    bob.ok(json!({"op": "join_group", "group": old})).await;
    bob.ok(json!({"op": "logout"})).await;
    alice.group_send(old, "the secret").await;
    alice.ok(json!({"op": "delete_group", "group": old})).await;

    // The next group, by someone else, gets a new id and none of the old history.
    let (mut mallory, _) = server.user("mallory").await;
    let new = mallory.create_group("innocent").await;
    assert_ne!(new, old, "a deleted group's id was given out again");
    let history = mallory.ok(json!({"op": "history", "group": new})).await;
    assert_eq!(history["messages"], json!([]), "{history}");
    // Bob, a member of the deleted group, has nothing pending from it.
    let (_, pending) = bob
        .login(json!({"name": "bob", "password": PASSWORD}))
        .await;
    assert!(pending.is_empty(), "{pending:?}");

    // Nor after a restart, with the newest group deleted again.
    mallory
        .ok(json!({"op": "delete_group", "group": new}))
        .await;
    drop((alice, bob, mallory));
    server.restart().await;
    let (mut carol, _) = server.user("carol").await;
    let newer = carol.create_group("after restart").await;
    assert!(newer > new, "ids must only grow: {newer} after {new}");
    carol
        .expect_err(json!({"op": "history", "group": old}), "not_found")
        .await;
}
