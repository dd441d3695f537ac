//! Who gets into a group: closed groups and invitations, group admins, removals that
//! stick, history from the join or shared, member events; and the per-account login
//! rate.

use serde_json::{json, Value};

use crate::util::{find, TestServer, PASSWORD};

/// The texts of a `history` reply, oldest first.
fn texts(reply: &Value) -> Vec<String> {
    let mut texts: Vec<(i64, String)> = reply["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {reply}"))
        .iter()
        .map(|m| {
            (
                m["seq"].as_i64().unwrap(),
                m["text"].as_str().unwrap().into(),
            )
        })
        .collect();
    texts.sort();
    texts.into_iter().map(|(_, t)| t).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_group_admits_only_whom_its_creator_or_admins_invite() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (mut carol, carol_id) = server.user("carol").await;
    let group = alice
        .create_group_with("secret", json!({"open": false}))
        .await;
    alice.group_send(group, "before bob").await;

    // Not invited: the group looks like no group at all, for joining and inviting.
    bob.expect_err(json!({"op": "join_group", "group": group}), "not_found")
        .await;
    bob.expect_err(
        json!({"op": "group_invite", "group": group, "id": carol_id}),
        "not_found",
    )
    .await;

    alice
        .ok(json!({"op": "group_invite", "group": group, "id": bob_id}))
        .await;
    alice
        .expect_err(
            json!({"op": "group_invite", "group": group, "id": alice_id}),
            "bad_request",
        )
        .await;
    let invite = bob.wait_event("group_invite").await;
    assert_eq!(
        invite,
        json!({"event": "group_invite", "group": group, "name": "secret",
               "desc": "about secret", "by": {"id": alice_id, "name": "alice"}})
    );
    let reply = bob.ok(json!({"op": "invites"})).await;
    assert_eq!(reply["invites"].as_array().unwrap().len(), 1, "{reply}");
    assert_eq!(reply["invites"][0]["group"], group);
    // Carol was not invited: still out.
    carol
        .expect_err(json!({"op": "join_group", "group": group}), "not_found")
        .await;

    let reply = bob.ok(json!({"op": "join_group", "group": group})).await;
    assert_eq!(reply["group"]["role"], "member", "{reply}");
    let joined = alice.wait_event("member_joined").await;
    assert_eq!(
        joined,
        json!({"event": "member_joined", "group": group, "user": {"id": bob_id, "name": "bob"}})
    );
    // A member needs no invitation; the invitation is used up.
    alice
        .expect_err(
            json!({"op": "group_invite", "group": group, "id": bob_id}),
            "conflict",
        )
        .await;
    assert_eq!(bob.ok(json!({"op": "invites"})).await["invites"], json!([]));
    // History from before the join stays hidden (the default); what follows is seen.
    let reply = bob.ok(json!({"op": "history", "group": group})).await;
    assert_eq!(texts(&reply), Vec::<String>::new(), "{reply}");
    alice.group_send(group, "welcome bob").await;
    assert_eq!(bob.next_msg().await["text"], "welcome bob");
    let reply = bob.ok(json!({"op": "history", "group": group})).await;
    assert_eq!(texts(&reply), vec!["welcome bob"], "{reply}");

    // A plain member may not invite; a group admin may.
    bob.expect_err(
        json!({"op": "group_invite", "group": group, "id": carol_id}),
        "forbidden",
    )
    .await;
    bob.expect_err(
        json!({"op": "group_role", "group": group, "id": bob_id, "role": "admin"}),
        "forbidden",
    )
    .await;
    alice
        .ok(json!({"op": "group_role", "group": group, "id": bob_id, "role": "admin"}))
        .await;
    let members = alice
        .ok(json!({"op": "group_members", "group": group}))
        .await;
    assert_eq!(find(&members["members"], bob_id)["role"], "admin");
    bob.ok(json!({"op": "group_invite", "group": group, "id": carol_id}))
        .await;
    let invite = carol.wait_event("group_invite").await;
    assert_eq!(invite["by"], json!({"id": bob_id, "name": "bob"}));

    // A declined invitation lets nobody in.
    carol
        .ok(json!({"op": "decline_invite", "group": group}))
        .await;
    carol
        .expect_err(json!({"op": "decline_invite", "group": group}), "not_found")
        .await;
    carol
        .expect_err(json!({"op": "join_group", "group": group}), "not_found")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_stays_out_until_invited_again() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (mut carol, carol_id) = server.user("carol").await;
    let (mut dave, dave_id) = server.user("dave").await;
    let group = alice.create_group_with("club", json!({"open": true})).await;
    for conn in [&mut bob, &mut carol, &mut dave] {
        conn.ok(json!({"op": "join_group", "group": group})).await;
    }

    alice
        .ok(json!({"op": "group_kick", "group": group, "id": bob_id}))
        .await;
    assert_eq!(
        bob.wait_event("removed_from_group").await,
        json!({"event": "removed_from_group", "group": group})
    );
    assert_eq!(
        carol.wait_event("member_left").await,
        json!({"event": "member_left", "group": group, "user": bob_id, "removed": true})
    );
    // The group is open, but not to him: he stays out, and learns nothing more.
    bob.expect_err(json!({"op": "join_group", "group": group}), "not_found")
        .await;
    bob.expect_err(json!({"op": "history", "group": group}), "forbidden")
        .await;
    // Until the creator lets him back in.
    alice
        .ok(json!({"op": "group_invite", "group": group, "id": bob_id}))
        .await;
    bob.ok(json!({"op": "join_group", "group": group})).await;

    // Leaving is not a removal: members are told, and the leaver may come back.
    carol.ok(json!({"op": "leave_group", "group": group})).await;
    loop {
        let event = alice.wait_event("member_left").await;
        if event["user"] == carol_id {
            assert_eq!(
                event,
                json!({"event": "member_left", "group": group, "user": carol_id,
                       "removed": false})
            );
            break;
        }
    }
    carol.ok(json!({"op": "join_group", "group": group})).await;

    // A group admin removes members, but not other admins or the creator.
    for id in [bob_id, dave_id] {
        alice
            .ok(json!({"op": "group_role", "group": group, "id": id, "role": "admin"}))
            .await;
    }
    bob.expect_err(
        json!({"op": "group_kick", "group": group, "id": dave_id}),
        "forbidden",
    )
    .await;
    bob.expect_err(
        json!({"op": "group_kick", "group": group, "id": alice_id}),
        "forbidden",
    )
    .await;
    bob.ok(json!({"op": "group_kick", "group": group, "id": carol_id}))
        .await;
    carol
        .expect_err(json!({"op": "join_group", "group": group}), "not_found")
        .await;
    // Demoted, an admin is a member again, and may remove nobody.
    alice
        .ok(json!({"op": "group_role", "group": group, "id": dave_id, "role": "member"}))
        .await;
    dave.expect_err(
        json!({"op": "group_kick", "group": group, "id": bob_id}),
        "forbidden",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_with_shared_history_shows_newcomers_what_came_before() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.user("alice").await;
    let (mut bob, _) = server.register("bob").await;
    let shared = alice
        .create_group_with("archive", json!({"open": true, "shared_history": true}))
        .await;
    let private = alice
        .create_group_with("fresh", json!({"open": true}))
        .await;
    alice.group_send(shared, "old news").await;
    alice.group_send(private, "old secret").await;

    bob.login_name("bob", PASSWORD).await;
    let reply = bob.ok(json!({"op": "join_group", "group": shared})).await;
    assert_eq!(reply["group"]["shared_history"], true, "{reply}");
    bob.ok(json!({"op": "join_group", "group": private})).await;
    let reply = bob.ok(json!({"op": "history", "group": shared})).await;
    assert_eq!(texts(&reply), vec!["old news"], "{reply}");
    let reply = bob.ok(json!({"op": "history", "group": private})).await;
    assert_eq!(texts(&reply), Vec::<String>::new(), "{reply}");

    // The conversation list shows no message from before the join either.
    let reply = bob.ok(json!({"op": "conversations"})).await;
    let convs = reply["conversations"].as_array().unwrap();
    let fresh = convs
        .iter()
        .find(|c| c["group"] == private)
        .unwrap_or_else(|| panic!("no conversation for the group in {reply}"));
    assert!(
        fresh["last"].is_null() || fresh.get("last").is_none(),
        "{reply}"
    );
    assert_eq!(fresh["unread"], 0, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_of_one_account_are_rate_limited() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.user("alice").await;
    let (reply, _) = alice
        .login(json!({"name": "alice", "password": PASSWORD}))
        .await;
    let token = reply["token"].clone();

    // A token login loop is refused after a burst, with a clear rate_limited error.
    let mut refused = None;
    for i in 0..40 {
        let mut conn = server.connect().await;
        let reply = conn.request(json!({"op": "login", "token": token})).await;
        if reply["ok"] == false {
            refused = Some((i, reply));
            break;
        }
    }
    let (after, reply) = refused.expect("forty logins of one account in a row were all let in");
    assert!(after >= 10, "refused after only {after} logins: {reply}");
    assert_eq!(reply["error"]["code"], "rate_limited", "{reply}");
    // Other accounts are not affected.
    let (_bob, _) = server.user("bob").await;
}
