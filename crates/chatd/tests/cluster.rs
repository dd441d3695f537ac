//! A cluster of real `chatd` processes on one PostgreSQL database and one Redis, with
//! clients on different nodes: users must not be able to tell that they are on different
//! nodes. See `cluster/util.rs` for the environment these tests need; without it they
//! print why they are skipped and pass.

#[path = "cluster/conn.rs"]
mod conn;
#[path = "cluster/proxy.rs"]
mod proxy;
#[path = "cluster/util.rs"]
mod util;

use std::time::Duration;

use serde_json::{json, Value};

use conn::{assert_msg, befriend, Conn};
use proxy::Proxy;
use util::{Cluster, Services, DEAD_NODE_WAIT, WAIT};

/// The services, or return from the test (skipped).
macro_rules! services {
    ($test:literal) => {
        match Services::get($test).await {
            Some(services) => services,
            None => return,
        }
    };
}

#[tokio::test]
async fn one_to_one_chat_across_nodes() {
    let services = services!("one_to_one_chat_across_nodes");
    let cluster = Cluster::start(&services, 2).await;
    let (mut alice, alice_id) = cluster.user(1, "alice").await;
    let (mut bob, bob_id) = cluster.user(2, "bob").await;

    let id = alice.send_msg(bob_id, "hello from n1").await;
    let got = bob.next_msg().await;
    assert_msg(&got, id, alice_id, "hello from n1");
    assert_eq!(got["to"], bob_id, "{got}");
    assert_eq!(got["from_name"], "alice", "{got}");

    let back = bob.send_msg(alice_id, "hello from n2").await;
    assert!(back > id, "ids increase across nodes: {id} then {back}");
    assert_msg(&alice.next_msg().await, back, bob_id, "hello from n2");

    // A burst keeps its order across the nodes.
    let mut sent = Vec::new();
    for k in 0..20 {
        sent.push(alice.send_msg(bob_id, &format!("burst {k}")).await);
    }
    for (k, id) in sent.iter().enumerate() {
        assert_msg(&bob.next_msg().await, *id, alice_id, &format!("burst {k}"));
    }
    bob.ack(*sent.last().expect("sent")).await;

    // Both see the whole conversation in history, whichever node they ask.
    let history = bob
        .ok(json!({"op": "history", "with": alice_id, "limit": 100}))
        .await;
    assert_eq!(
        history["messages"].as_array().map(Vec::len),
        Some(22),
        "{history}"
    );
}

#[tokio::test]
async fn group_chat_across_nodes() {
    let services = services!("group_chat_across_nodes");
    let cluster = Cluster::start(&services, 3).await;
    let (mut alice, alice_id) = cluster.user(1, "alice").await;
    let (mut bob, bob_id) = cluster.user(2, "bob").await;
    let (mut carol, carol_id) = cluster.user(3, "carol").await;
    // dave shares alice's node: local and remote members of one group.
    let (mut dave, dave_id) = cluster.user(1, "dave").await;

    let reply = alice
        .ok(json!({"op": "create_group", "name": "crabs", "desc": "rust", "open": true}))
        .await;
    let group = reply["group"]["id"].as_i64().expect("group id");
    for member in [&mut bob, &mut carol, &mut dave] {
        member.ok(json!({"op": "join_group", "group": group})).await;
    }

    // Every member but the sender gets it, on every node.
    let first = alice.group_send(group, "hello, crabs").await;
    for member in [&mut bob, &mut carol, &mut dave] {
        let got = member.next_msg().await;
        assert_msg(&got, first, alice_id, "hello, crabs");
        assert_eq!(got["group"], group, "{got}");
    }

    // A member who joined on another node sends too; the sender is left out again.
    let second = carol.group_send(group, "hi from n3").await;
    for member in [&mut alice, &mut bob, &mut dave] {
        assert_msg(&member.next_msg().await, second, carol_id, "hi from n3");
    }
    // alice's next message is bob's: had her own come back, it would have come first.
    let third = bob.group_send(group, "hi from n2").await;
    assert_msg(&alice.next_msg().await, third, bob_id, "hi from n2");
    assert_msg(&carol.next_msg().await, third, bob_id, "hi from n2");
    assert_msg(&dave.next_msg().await, third, bob_id, "hi from n2");
    // The same for carol and dave, with a last message from alice.
    let last = alice.group_send(group, "bye").await;
    assert_msg(&carol.next_msg().await, last, alice_id, "bye");
    assert_msg(&dave.next_msg().await, last, alice_id, "bye");
    assert_msg(&bob.next_msg().await, last, alice_id, "bye");

    // A member who leaves on its node gets nothing more.
    dave.ok(json!({"op": "leave_group", "group": group})).await;
    let after = bob.group_send(group, "after dave").await;
    assert_msg(&alice.next_msg().await, after, bob_id, "after dave");
    assert_msg(&carol.next_msg().await, after, bob_id, "after dave");
    let direct = bob.send_msg(dave_id, "just you").await;
    assert_msg(&dave.next_msg().await, direct, bob_id, "just you");

    // The member list shows everyone online, wherever they are.
    let members = carol
        .ok(json!({"op": "group_members", "group": group}))
        .await;
    let members = members["members"].as_array().expect("members").clone();
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(
        members.iter().all(|m| m["online"] == true),
        "everyone is online: {members:?}"
    );
}

#[tokio::test]
async fn presence_across_nodes() {
    let services = services!("presence_across_nodes");
    let cluster = Cluster::start(&services, 2).await;
    let (mut alice, alice_id) = cluster.user(1, "alice").await;
    let (mut bob, bob_id) = cluster.register(2, "bob").await;

    let reply = alice.ok(json!({"op": "add_friend", "id": bob_id})).await;
    assert_eq!(reply["requested"], true, "{reply}");

    // bob logs in on n2 and accepts: alice on n1 is told, and bob sees her online.
    let (login, _) = bob.login("bob").await;
    assert_eq!(login["friends"], json!([]), "{login}");
    let reply = bob.ok(json!({"op": "add_friend", "id": alice_id})).await;
    assert_eq!(
        reply["friend"]["online"], true,
        "alice on n1 is online on n2: {reply}"
    );
    let added = alice.wait_event("friend_added").await;
    assert_eq!(added["friend"]["id"], bob_id, "{added}");
    assert_eq!(added["friend"]["online"], true, "{added}");
    assert_eq!(alice.friends().await, vec![(bob_id, true)]);
    assert_eq!(alice.users().await, sorted(vec![alice_id, bob_id]));
    assert_eq!(bob.friends().await, vec![(alice_id, true)]);
    assert_eq!(bob.users().await, sorted(vec![alice_id, bob_id]));

    // A friend made across nodes is told at once, with the online state.
    let (mut carol, carol_id) = cluster.user(2, "carol").await;
    befriend(&mut carol, carol_id, &mut alice, alice_id).await;

    // bob logs out: offline for alice, in events, `friends` and `users`.
    bob.ok(json!({"op": "logout"})).await;
    alice.wait_presence(bob_id, false, WAIT).await;
    assert_eq!(
        alice.friends().await,
        vec![(bob_id, false), (carol_id, true)]
    );
    assert_eq!(alice.users().await, sorted(vec![alice_id, carol_id]));
    assert_eq!(carol.users().await, sorted(vec![alice_id, carol_id]));

    // Back on the same connection, then gone with the connection.
    bob.login("bob").await;
    alice.wait_presence(bob_id, true, WAIT).await;
    drop(bob);
    alice.wait_presence(bob_id, false, WAIT).await;
    assert_eq!(
        alice.friends().await,
        vec![(bob_id, false), (carol_id, true)]
    );

    // alice goes: her friend on the other node is told.
    alice.ok(json!({"op": "logout"})).await;
    carol.wait_presence(alice_id, false, WAIT).await;
    assert_eq!(carol.friends().await, vec![(alice_id, false)]);
    assert_eq!(carol.users().await, vec![carol_id]);
}

#[tokio::test]
async fn second_login_on_another_node_kicks_the_first() {
    let services = services!("second_login_on_another_node_kicks_the_first");
    let cluster = Cluster::start(&services, 3).await;
    let (mut alice, alice_id) = cluster.user(1, "alice").await;
    let (mut bob, bob_id) = cluster.user(3, "bob").await;
    befriend(&mut bob, bob_id, &mut alice, alice_id).await;

    // A message the first session receives but does not ack.
    let unacked = bob.send_msg(alice_id, "did you get this?").await;
    assert_msg(
        &alice.next_msg().await,
        unacked,
        bob_id,
        "did you get this?",
    );

    // alice logs in on n2: the n1 session is kicked; the new one gets the unacked message.
    let mut again = cluster.connect(2, "alice").await;
    let (_, pending) = again.login("alice").await;
    let pending_ids: Vec<i64> = pending.iter().filter_map(|m| m["id"].as_i64()).collect();
    assert_eq!(pending_ids, vec![unacked], "{pending:?}");
    alice.expect_kicked("logged_in_elsewhere").await;

    // Messages now reach the n2 session; alice stayed online throughout.
    let next = bob.send_msg(alice_id, "now on n2").await;
    assert_msg(&again.next_msg().await, next, bob_id, "now on n2");
    assert_eq!(bob.friends().await, vec![(alice_id, true)]);
    let mark = again.send_msg(bob_id, "marker").await;
    let (_, before) = bob
        .wait_for(WAIT, |e| e["event"] == "msg" && e["id"] == mark)
        .await;
    assert!(
        !before
            .iter()
            .any(|e| e["event"] == "presence" && e["online"] == false),
        "a kick is no logout: {before:?}"
    );

    // And back to n1: the n2 session is kicked in turn.
    let mut third = cluster.connect(1, "alice").await;
    third.login("alice").await;
    again.expect_kicked("logged_in_elsewhere").await;
    let last = bob.send_msg(alice_id, "back on n1").await;
    assert_msg(&third.next_msg().await, last, bob_id, "back on n1");
}

/// alice on n1 and bob on n2, friends; bob has seen and acked one message; then n2 is
/// killed with SIGKILL and alice sends to bob. Returns the ids alice sent while bob was
/// gone, once alice has been told that bob is offline.
async fn kill_bobs_node(cluster: &mut Cluster) -> (Conn, i64, i64, i64, Vec<i64>) {
    let (mut alice, alice_id) = cluster.user(1, "alice").await;
    let (mut bob, bob_id) = cluster.user(2, "bob").await;
    befriend(&mut alice, alice_id, &mut bob, bob_id).await;
    let seen = alice.send_msg(bob_id, "before").await;
    assert_msg(&bob.next_msg().await, seen, alice_id, "before");
    bob.ack(seen).await;

    // n2 dies with bob's session on it: no logout, no shutdown, nothing said to anyone.
    cluster.kill(2).await;
    drop(bob);
    let mut sent = Vec::new();
    for k in 0..3 {
        sent.push(alice.send_msg(bob_id, &format!("while gone {k}")).await);
    }

    // bob counts as offline within the node TTL (10 s) and a heartbeat.
    alice.wait_presence(bob_id, false, DEAD_NODE_WAIT).await;
    assert_eq!(alice.friends().await, vec![(bob_id, false)]);
    assert_eq!(alice.users().await, vec![alice_id]);
    sent.push(alice.send_msg(bob_id, "while gone 3").await);
    (alice, alice_id, bob_id, seen, sent)
}

/// bob logs in again on node `i`: he gets everything acknowledged to alice, in order.
async fn bob_comes_back(
    cluster: &Cluster,
    i: usize,
    alice_id: i64,
    seen: i64,
    sent: &[i64],
) -> Conn {
    let mut bob = cluster.connect(i, "bob").await;
    let (login, pending) = bob.login("bob").await;
    assert_eq!(login["friends"][0]["online"], true, "{login}");
    // Acks are written in bulk, so the ack of "before" may have died with n2: then that
    // message comes again (clients drop ids they have), never is one lost.
    let pending: Vec<_> = pending.into_iter().filter(|m| m["id"] != seen).collect();
    let ids: Vec<i64> = pending.iter().filter_map(|m| m["id"].as_i64()).collect();
    assert_eq!(ids, sent, "{pending:?}");
    for (k, msg) in pending.iter().enumerate() {
        assert_msg(msg, sent[k], alice_id, &format!("while gone {k}"));
    }
    bob
}

#[tokio::test]
async fn messages_to_a_user_of_a_killed_node_wait_for_the_next_login() {
    let services = services!("messages_to_a_user_of_a_killed_node_wait_for_the_next_login");
    let mut cluster = Cluster::start(&services, 3).await;
    let (mut alice, alice_id, bob_id, seen, sent) = kill_bobs_node(&mut cluster).await;

    // bob comes back on n1, the node that told alice he was gone.
    let mut bob = bob_comes_back(&cluster, 1, alice_id, seen, &sent).await;
    alice.wait_presence(bob_id, true, WAIT).await;

    // The cluster goes on with two nodes.
    let live = alice.send_msg(bob_id, "welcome back").await;
    assert_msg(&bob.next_msg().await, live, alice_id, "welcome back");
    let (mut carol, carol_id) = cluster.user(3, "carol").await;
    let hi = bob.send_msg(carol_id, "hi carol").await;
    assert_msg(&carol.next_msg().await, hi, bob_id, "hi carol");
}

/// Each node notices a dead node on its own heartbeat tick, up to 2 s apart. A login on
/// a node that still counts the dead node's users as online must still tell friends the
/// user is back (friends elsewhere were told "offline" already).
#[tokio::test]
async fn back_on_a_node_that_has_not_noticed_the_death_yet() {
    let services = services!("back_on_a_node_that_has_not_noticed_the_death_yet");
    let mut cluster = Cluster::start(&services, 3).await;
    let (mut alice, alice_id, bob_id, seen, sent) = kill_bobs_node(&mut cluster).await;
    let _bob = bob_comes_back(&cluster, 3, alice_id, seen, &sent).await;
    alice.wait_presence(bob_id, true, WAIT).await;
}

#[tokio::test]
async fn two_clients_chat_through_nginx() {
    let services = services!("two_clients_chat_through_nginx");
    let mut cluster = Cluster::start(&services, 2).await;
    let Some(front) = cluster.start_nginx("two_clients_chat_through_nginx").await else {
        return;
    };
    // least_conn with alice's connection open sends bob's to the other node.
    let mut alice = Conn::connect(front, "alice@nginx").await;
    let alice_id = alice.register("alice").await;
    alice.login("alice").await;
    let mut bob = Conn::connect(front, "bob@nginx").await;
    let bob_id = bob.register("bob").await;
    bob.login("bob").await;

    let hello = alice.send_msg(bob_id, "through nginx").await;
    assert_msg(&bob.next_msg().await, hello, alice_id, "through nginx");
    let back = bob.send_msg(alice_id, "and back").await;
    assert_msg(&alice.next_msg().await, back, bob_id, "and back");

    // Each node holds one of them: both are online on both nodes.
    for i in 1..=2 {
        let (mut carol, carol_id) = cluster.user(i, &format!("carol{i}")).await;
        assert_eq!(
            carol.users().await,
            sorted(vec![alice_id, bob_id, carol_id])
        );
        carol.ok(json!({"op": "logout"})).await;
    }
}

/// Behind nginx (PROXY protocol on) the limit on password attempts applies to each
/// client address, not to nginx's: a client that spends its budget does not lock out a
/// client from another address.
#[tokio::test]
async fn password_limits_apply_per_client_behind_nginx() {
    let services = services!("password_limits_apply_per_client_behind_nginx");
    // One node: the limits are a node's own, and every connection must meet the same one.
    let mut cluster = Cluster::start_with_auth(&services, 1, 0.001, 3.0).await;
    let Some(front) = cluster
        .start_nginx("password_limits_apply_per_client_behind_nginx")
        .await
    else {
        return;
    };
    let mut mallory = Conn::connect(front, "mallory@nginx").await;
    mallory.register("mallory").await;
    for _ in 0..2 {
        mallory
            .expect_err(
                json!({"op": "login", "name": "mallory", "password": "guess"}),
                "auth_failed",
            )
            .await;
    }
    mallory
        .expect_err(
            json!({"op": "login", "name": "mallory", "password": "guess"}),
            "rate_limited",
        )
        .await;
    // Again from 127.0.0.1 on a new connection: still the same client, still refused.
    let mut again = Conn::connect(front, "mallory-again@nginx").await;
    again
        .expect_err(
            json!({"op": "register", "name": "mallory2", "password": "x"}),
            "rate_limited",
        )
        .await;

    // Another client host, through the same nginx, registers and logs in.
    let mut alice = Conn::connect_from(front, "127.0.0.2", "alice@nginx").await;
    alice.register("alice").await;
    alice.login("alice").await;
    alice.ok(json!({"op": "whoami"})).await;
}

fn sorted(mut ids: Vec<i64>) -> Vec<i64> {
    ids.sort_unstable();
    ids
}

/// An admin on one node reaches users on another: a broadcast arrives, a mute stops
/// sending there (and an unmute lets it resume), a kick ends the session there.
#[tokio::test]
async fn admin_broadcast_mute_and_kick_across_nodes() {
    let services = services!("admin_broadcast_mute_and_kick_across_nodes");
    let cluster = Cluster::start(&services, 2).await;
    let (mut root, root_id) = cluster.user(1, "root").await;
    cluster.grant("root").await;
    let (mut bob, bob_id) = cluster.user(2, "bob").await;
    let (mut carol, carol_id) = cluster.user(2, "carol").await;

    root.ok(json!({"op": "broadcast", "text": "hello, cluster"}))
        .await;
    for conn in [&mut bob, &mut carol, &mut root] {
        let event = conn.wait_event("broadcast").await;
        assert_eq!(event["text"], "hello, cluster");
        assert_eq!(event["from"], root_id);
    }

    // The mute reaches node 2 through Redis: bob's sends there are refused from then on.
    root.ok(json!({"op": "mute", "id": bob_id, "seconds": 3600}))
        .await;
    let muted = until_reply(&mut bob, carol_id, |reply| reply["ok"] == false).await;
    assert_eq!(muted["error"]["code"], "forbidden", "{muted}");
    root.ok(json!({"op": "unmute", "id": bob_id})).await;
    until_reply(&mut bob, carol_id, |reply| reply["ok"] == true).await;

    root.ok(json!({"op": "kick", "id": carol_id, "reason": "bye"}))
        .await;
    carol.expect_kicked("admin").await;
}

/// Sends from `conn` to `to` until a reply satisfies `done` (a change made on another
/// node takes a moment to arrive), within [`WAIT`].
async fn until_reply(conn: &mut Conn, to: i64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reply = conn
            .request(json!({"op": "send", "to": to, "text": "probe"}))
            .await;
        if done(&reply) {
            return reply;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change never reached the node: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Redis goes away for a while: each node keeps serving its own users, messages between
/// nodes still arrive (read from PostgreSQL), and once Redis is back the nodes resubscribe
/// and presence works across them again.
#[tokio::test]
async fn the_cluster_rides_out_a_redis_outage() {
    let services = services!("the_cluster_rides_out_a_redis_outage");
    let proxy = Proxy::start(services.redis_addr()).await;
    let services = services.with_redis(format!("redis://{}", proxy.addr()));
    let cluster = Cluster::start(&services, 2).await;
    let (mut alice, alice_id) = cluster.user(1, "alice").await;
    let (mut carol, carol_id) = cluster.user(1, "carol").await;
    let (mut bob, bob_id) = cluster.user(2, "bob").await;
    let (mut mallory, _) = cluster.user(2, "mallory").await;
    let mallory_id = mallory.ok(json!({"op": "whoami"})).await["user"]["id"].clone();
    befriend(&mut alice, alice_id, &mut bob, bob_id).await;

    assert_eq!(cluster.http_status(1, "/readyz").await, 200);
    proxy.cut();
    // Node 1 is not ready without Redis (a balancer would send newcomers elsewhere),
    // though it is alive.
    let deadline = tokio::time::Instant::now() + WAIT;
    while cluster.http_status(1, "/readyz").await != 503 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed ready with Redis gone"
        );
    }
    assert_eq!(cluster.http_status(1, "/healthz").await, 200);
    // A block made while Redis is away cannot be published to node 2.
    alice.ok(json!({"op": "block", "id": mallory_id})).await;
    // On one node: delivered at once, Redis or not.
    let local = alice.send_msg(carol_id, "local, Redis down").await;
    assert_msg(
        &carol.next_msg().await,
        local,
        alice_id,
        "local, Redis down",
    );
    // Across nodes: the other node reads it from PostgreSQL.
    let across = alice.send_msg(bob_id, "across, Redis down").await;
    assert_msg(
        &bob.next_msg().await,
        across,
        alice_id,
        "across, Redis down",
    );

    proxy.restore();
    let deadline = tokio::time::Instant::now() + WAIT;
    while cluster.http_status(1, "/readyz").await != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz not ready again with Redis back"
        );
    }
    // Once node 1 sees a login on node 2 again, both are back on Redis.
    let (_dave, dave_id) = cluster.user(2, "dave").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !alice.users().await.contains(&dave_id) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 1 never saw node 2's login after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bob.ok(json!({"op": "logout"})).await;
    alice.wait_presence(bob_id, false, WAIT).await;
    let after = alice.send_msg(bob_id, "after").await;
    assert!(after > across);
    // Node 2 reloaded the blocks when it got Redis back: mallory is refused there too.
    let refused = until_reply(&mut mallory, alice_id, |r| r["ok"] == false).await;
    assert_eq!(
        refused["error"],
        json!({"code": "forbidden", "message": "refused"}),
        "{refused}"
    );
}

/// Issue 10: one conversation written from two nodes at once numbers its messages 1, 2,
/// 3, ... with no gap and no seq twice, and each side receives the other's in seq order.
#[tokio::test]
async fn seqs_have_no_gaps_under_concurrent_senders_on_two_nodes() {
    let services = services!("seqs_have_no_gaps_under_concurrent_senders_on_two_nodes");
    let cluster = Cluster::start(&services, 2).await;
    let (alice, alice_id) = cluster.user(1, "alice").await;
    let (bob, bob_id) = cluster.user(2, "bob").await;
    const EACH: usize = 40;
    let sender = |mut conn: Conn, to: i64, name: &'static str| {
        tokio::spawn(async move {
            let mut mine = Vec::new();
            for k in 0..EACH {
                let reply = conn
                    .ok(json!({"op": "send", "to": to, "text": format!("{name} {k}")}))
                    .await;
                mine.push(reply["msg"]["seq"].as_i64().expect("seq"));
            }
            // The other side's messages, in the order they came.
            let mut theirs = Vec::new();
            while theirs.len() < EACH {
                let msg = conn.next_msg().await;
                theirs.push(msg["seq"].as_i64().expect("seq"));
            }
            (conn, mine, theirs)
        })
    };
    let a = sender(alice, bob_id, "alice");
    let b = sender(bob, alice_id, "bob");
    let (mut alice, a_mine, a_theirs) = a.await.expect("alice");
    let (_bob, b_mine, b_theirs) = b.await.expect("bob");
    for seqs in [&a_mine, &a_theirs, &b_mine, &b_theirs] {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "out of order: {seqs:?}"
        );
    }
    assert_eq!(a_mine, b_theirs);
    assert_eq!(b_mine, a_theirs);
    let mut all: Vec<i64> = a_mine.iter().chain(&b_mine).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=2 * EACH as i64).collect::<Vec<_>>());
    let history = alice
        .ok(json!({"op": "history", "with": bob_id, "limit": 100}))
        .await;
    let seqs: Vec<i64> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=2 * EACH as i64).collect::<Vec<_>>());
}
