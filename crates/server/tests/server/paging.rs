//! Costly answers are paged: a big group's members and a long friend list come a page at
//! a time, and the login reply stays small whatever the user's size.

use serde_json::{json, Value};

use crate::util::{befriend, ids, TestServer};

/// Every page of `op` (`friends` or `group_members`) with `limit`, and the ids in order.
async fn pages(conn: &mut crate::util::Conn, req: Value, key: &str, limit: u32) -> Vec<i64> {
    let mut all = Vec::new();
    let mut pages = 0;
    loop {
        let mut req = req.clone();
        req["limit"] = json!(limit);
        if let Some(last) = all.last() {
            req["after"] = json!(last);
        }
        let reply = conn.ok(req).await;
        let page = ids(&reply[key]);
        assert!(page.len() <= limit as usize, "{reply}");
        all.extend(page);
        pages += 1;
        assert!(pages < 100, "paging does not end");
        if reply["more"] != true {
            return all;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_groups_members_come_in_pages() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let group = alice.create_group("crowd").await;
    let mut expected = vec![alice_id];
    for i in 0..29 {
        let (mut conn, id) = server.user(&format!("member{i}")).await;
        conn.ok(json!({"op": "join_group", "group": group})).await;
        expected.push(id);
    }
    expected.sort();

    // `groups` says how many, and lists only the first few.
    let reply = alice.ok(json!({"op": "groups"})).await;
    let listed = &reply["groups"][0];
    assert_eq!(listed["member_count"], 30, "{reply}");
    assert_eq!(
        ids(&listed["members"]),
        expected[..chat_proto::types::INLINE_MEMBERS].to_vec()
    );
    assert_eq!(reply["more"], false);

    // group_members pages through all of them, by id, each once.
    let members = pages(
        &mut alice,
        json!({"op": "group_members", "group": group}),
        "members",
        7,
    )
    .await;
    assert_eq!(members, expected);
    let whole = alice
        .ok(json!({"op": "group_members", "group": group}))
        .await;
    assert_eq!(
        ids(&whole["members"]),
        expected,
        "the default page holds 30"
    );
    assert_eq!(whole["more"], false);

    // Out of range, or not a member.
    for limit in [0, 501] {
        alice
            .expect_err(
                json!({"op": "group_members", "group": group, "limit": limit}),
                "bad_request",
            )
            .await;
    }
    let (mut eve, _) = server.user("eve").await;
    eve.expect_err(json!({"op": "group_members", "group": group}), "forbidden")
        .await;
    eve.expect_err(
        json!({"op": "group_members", "group": group + 100}),
        "not_found",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_reply_stays_small_for_a_user_with_many_friends() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let mut expected = Vec::new();
    let cap = chat_proto::reply::LOGIN_FRIENDS;
    for i in 0..cap + 5 {
        let (mut friend, id) = server.user(&format!("friend{i}")).await;
        befriend(&mut friend, id, &mut alice, alice_id).await;
        expected.push(id);
    }
    expected.sort();

    let mut again = server.connect().await;
    let (reply, _) = again
        .login(json!({"name": "alice", "password": crate::util::PASSWORD}))
        .await;
    assert_eq!(ids(&reply["friends"]), expected[..cap].to_vec());
    assert_eq!(reply["friends_more"], true, "{reply}");
    // About 60 bytes a friend, whatever the number of friends.
    let size = reply.to_string().len();
    assert!(size < cap * 80 + 1024, "a login reply of {size} bytes");

    let friends = pages(&mut again, json!({"op": "friends"}), "friends", 64).await;
    assert_eq!(friends, expected);
}
