//! The classic muduo chat server's JSON `msgid` protocol, spoken as raw bytes over TCP:
//! register, login with the offline messages, friends and groups in LOGIN_ACK, chat with
//! native clients both ways, the framing (split, joined, differently terminated and
//! malformed requests), the size limit, identity, kicks and delivery.
//!
//! A classic client cannot see that a request without a reply has run; where a test needs
//! to know, it sends a REG afterwards: requests run in order, so its REG_ACK means that
//! everything before it is done.

use std::net::SocketAddr;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::{befriend, find, TestServer, PASSWORD, WAIT};

/// A raw classic connection: writes requests, reads NUL-terminated objects.
pub(crate) struct Classic {
    stream: TcpStream,
    /// Bytes read and not yet returned as an object.
    buf: Vec<u8>,
    /// How many REGs this connection has sent as barriers (to make fresh names).
    barriers: u32,
}

impl Classic {
    pub(crate) async fn connect(addr: SocketAddr) -> Classic {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Classic {
            stream,
            buf: Vec::new(),
            barriers: 0,
        }
    }

    /// Writes bytes as they are, in one write.
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    /// Writes one request and its NUL, as the official client does.
    pub(crate) async fn send(&mut self, request: &Value) {
        let mut bytes = serde_json::to_vec(request).expect("json");
        bytes.push(0);
        self.send_raw(&bytes).await;
    }

    /// Reads more bytes; `false` when the server closed the connection (or reset it).
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("timed out waiting for the server");
        match n {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Takes one complete object off the buffer, if there is one.
    fn take(&mut self) -> Option<Value> {
        let end = self.buf.iter().position(|b| *b == 0)?;
        let object: Vec<u8> = self.buf.drain(..=end).collect();
        let text = &object[..end];
        let value: Value = serde_json::from_slice(text).unwrap_or_else(|e| {
            panic!(
                "server sent something that is not JSON ({e}): {:?}",
                String::from_utf8_lossy(text)
            )
        });
        assert!(value.is_object(), "server sent a non-object: {value}");
        assert!(value["msgid"].is_i64(), "server sent no msgid: {value}");
        Some(value)
    }

    /// The next object from the server.
    pub(crate) async fn next(&mut self) -> Value {
        loop {
            if let Some(object) = self.take() {
                return object;
            }
            assert!(
                self.fill().await,
                "connection closed while waiting for an object"
            );
        }
    }

    /// Reads until the server closes the connection; returns what came before.
    pub(crate) async fn expect_closed(&mut self) -> Vec<Value> {
        let mut objects = Vec::new();
        loop {
            while let Some(object) = self.take() {
                objects.push(object);
            }
            if !self.fill().await {
                assert!(
                    self.buf.is_empty(),
                    "closed in the middle of an object: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return objects;
            }
        }
    }

    /// REG; returns REG_ACK.
    async fn reg(&mut self, name: &str) -> Value {
        self.send(&json!({"msgid": 4, "name": name, "password": PASSWORD}))
            .await;
        let ack = self.next().await;
        assert_eq!(ack["msgid"], 5, "{ack}");
        ack
    }

    /// Registers `name`; returns the new id.
    async fn register(&mut self, name: &str) -> i64 {
        let ack = self.reg(name).await;
        assert_eq!(ack["errno"], 0, "{ack}");
        ack["id"].as_i64().expect("numeric id")
    }

    /// LOGIN; returns LOGIN_ACK.
    async fn login(&mut self, id: i64) -> Value {
        self.send(&json!({"msgid": 1, "id": id, "password": PASSWORD}))
            .await;
        let ack = self.next().await;
        assert_eq!(ack["msgid"], 2, "{ack}");
        ack
    }

    /// LOGIN that must succeed; returns LOGIN_ACK.
    async fn login_ok(&mut self, id: i64) -> Value {
        let ack = self.login(id).await;
        assert_eq!(ack["errno"], 0, "{ack}");
        assert_eq!(ack["id"], id, "{ack}");
        ack
    }

    /// LOGINOUT, and waits until it has run: from then on, messages to the user are
    /// pending (a connection merely dropped may still be taking them for a moment).
    async fn logout(&mut self) {
        self.send(&json!({"msgid": 3})).await;
        self.barrier().await;
    }

    /// Waits until every request sent before has run (see the module's doc): a REG of a
    /// fresh name, whose REG_ACK must be the next object.
    async fn barrier(&mut self) {
        self.barriers += 1;
        let name = format!("barrier-{}-{}", self.barriers, rand_suffix());
        let ack = self.reg(&name).await;
        assert_eq!(ack["errno"], 0, "{ack}");
    }
}

/// A short random suffix, so that barrier names of different connections never collide.
fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A classic user, registered and logged in on a new connection.
async fn classic_user(server: &TestServer, name: &str) -> (Classic, i64) {
    let mut conn = Classic::connect(server.addr()).await;
    let id = conn.register(name).await;
    conn.login_ok(id).await;
    (conn, id)
}

/// Parses a LOGIN_ACK array of JSON texts (or none, when the key is left out).
fn texts(ack: &Value, key: &str) -> Vec<Value> {
    match ack.get(key) {
        None => Vec::new(),
        Some(list) => list
            .as_array()
            .unwrap_or_else(|| panic!("{key} is not an array: {ack}"))
            .iter()
            .map(|s| {
                let s = s
                    .as_str()
                    .unwrap_or_else(|| panic!("{key} holds a non-string: {ack}"));
                serde_json::from_str(s).unwrap_or_else(|e| panic!("{key}: {s:?}: {e}"))
            })
            .collect(),
    }
}

/// Checks a classic `time`: "YYYY-MM-DD HH:MM:SS".
fn assert_time(object: &Value) {
    let time = object["time"]
        .as_str()
        .unwrap_or_else(|| panic!("{object}"));
    let shape: String = time
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    assert_eq!(shape, "9999-99-99 99:99:99", "{object}");
}

/// Checks a classic ONE_CHAT object.
fn assert_one_chat(object: &Value, from: (i64, &str), to: i64, text: &str) {
    assert_eq!(object["msgid"], 6, "{object}");
    assert_eq!(object["id"], from.0, "{object}");
    assert_eq!(object["name"], from.1, "{object}");
    assert_eq!(object["toid"], to, "{object}");
    assert_eq!(object["msg"], text, "{object}");
    assert_time(object);
}

/// Checks a classic GROUP_CHAT object.
fn assert_group_chat(object: &Value, from: (i64, &str), group: i64, text: &str) {
    assert_eq!(object["msgid"], 10, "{object}");
    assert_eq!(object["id"], from.0, "{object}");
    assert_eq!(object["name"], from.1, "{object}");
    assert_eq!(object["groupid"], group, "{object}");
    assert_eq!(object["msg"], text, "{object}");
    assert_time(object);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_log_in() {
    let server = TestServer::start().await;
    let mut conn = Classic::connect(server.addr()).await;
    let id = conn.register("alice").await;
    assert_eq!(
        conn.reg("alice").await,
        json!({"msgid": 5, "errno": 1}),
        "a taken name"
    );
    assert_eq!(conn.reg("").await["errno"], 1, "an invalid name");

    // A fresh user's LOGIN_ACK leaves out the empty lists.
    let ack = conn.login_ok(id).await;
    assert_eq!(
        ack,
        json!({"msgid": 2, "errno": 0, "id": id, "name": "alice"})
    );

    // Failures, on a connection that then still works.
    let mut other = Classic::connect(server.addr()).await;
    other
        .send(&json!({"msgid": 1, "id": id, "password": "wrong"}))
        .await;
    let failed = json!({"msgid": 2, "errno": 1, "errmsg": "id or password is invalid!"});
    assert_eq!(other.next().await, failed);
    assert_eq!(other.login(id + 100).await, failed, "no such user");
    other.send(&json!({"msgid": 1, "password": PASSWORD})).await;
    assert_eq!(other.next().await, failed, "no id");
    assert_eq!(other.reg("bob").await["errno"], 0);

    // A native client logs in as the classic user, and the other way round.
    let mut native = server.connect().await;
    native.login_name("alice", PASSWORD).await;
    conn.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_ack_carries_offline_messages_friends_and_groups() {
    let server = TestServer::start().await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (mut carol, carol_id) = server.user("carol").await;
    befriend(&mut carol, carol_id, &mut bob, bob_id).await;
    let mut alice = Classic::connect(server.addr()).await;
    let alice_id = alice.register("alice").await;
    alice.login_ok(alice_id).await;

    // Classic add-friend is a request, which bob accepts; and a group bob created, which
    // alice joins.
    alice
        .send(&json!({"msgid": 7, "id": alice_id, "friendid": bob_id}))
        .await;
    let request = bob.wait_event("friend_request").await;
    assert_eq!(request["from"]["id"], alice_id, "{request}");
    bob.ok(json!({"op": "add_friend", "id": alice_id})).await;
    let group = bob.create_group("rust").await;
    alice
        .send(&json!({"msgid": 9, "id": alice_id, "groupid": group}))
        .await;
    alice.logout().await;
    drop(alice);

    // While alice is away: one message to her, one to the group, one from carol.
    let one = bob.send_msg(alice_id, "are you there?").await;
    let two = bob.group_send(group, "meeting at 10").await;
    let three = carol.send_msg(alice_id, "hello from carol").await;
    assert!(one["id"].as_i64() < two["id"].as_i64() && two["id"].as_i64() < three["id"].as_i64());

    let mut alice = Classic::connect(server.addr()).await;
    let ack = alice.login_ok(alice_id).await;
    assert_eq!(ack["name"], "alice");
    for key in ["offlinemsg", "friends", "groups"] {
        assert!(
            ack[key]
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string)),
            "{key} must be an array of strings: {ack}"
        );
    }

    let offline = texts(&ack, "offlinemsg");
    assert_eq!(offline.len(), 3, "{ack}");
    assert_one_chat(&offline[0], (bob_id, "bob"), alice_id, "are you there?");
    assert_group_chat(&offline[1], (bob_id, "bob"), group, "meeting at 10");
    assert_one_chat(
        &offline[2],
        (carol_id, "carol"),
        alice_id,
        "hello from carol",
    );

    let friends = texts(&ack, "friends");
    assert_eq!(
        friends,
        vec![json!({"id": bob_id, "name": "bob", "state": "online"})]
    );

    let groups = texts(&ack, "groups");
    assert_eq!(groups.len(), 1, "{ack}");
    assert_eq!(groups[0]["id"], group);
    assert_eq!(groups[0]["groupname"], "rust");
    assert_eq!(groups[0]["groupdesc"], "about rust");
    let users = Value::Array(texts(&groups[0], "users"));
    assert_eq!(
        find(&users, bob_id),
        json!({"id": bob_id, "name": "bob", "state": "online", "role": "creator"})
    );
    assert_eq!(
        find(&users, alice_id),
        json!({"id": alice_id, "name": "alice", "state": "online", "role": "normal"})
    );

    // A friend offline shows as such.
    bob.drop_connection();
    let presence = carol.wait_event("presence").await;
    assert_eq!(
        presence,
        json!({"event": "presence", "user": bob_id, "online": false})
    );
    alice.barrier().await;
    let mut again = Classic::connect(server.addr()).await;
    let ack = again.login_ok(alice_id).await;
    assert_eq!(texts(&ack, "friends")[0]["state"], "offline", "{ack}");
    // The offline messages were delivered with the first LOGIN_ACK: they are gone.
    assert!(ack.get("offlinemsg").is_none(), "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_to_one_chat_between_classic_and_native_both_ways() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = classic_user(&server, "alice").await;
    let (mut bob, bob_id) = server.user("bob").await;

    // Classic to native: the time and name in the request are not the server's business.
    alice
        .send(&json!({
            "msgid": 6, "id": alice_id, "name": "alice", "toid": bob_id,
            "msg": "hi bob", "time": "2016-01-01 00:00:00"
        }))
        .await;
    let event = bob.next_msg().await;
    assert_eq!(event["from"], alice_id, "{event}");
    assert_eq!(event["from_name"], "alice", "{event}");
    assert_eq!(event["to"], bob_id, "{event}");
    assert_eq!(event["text"], "hi bob", "{event}");

    // Native to classic.
    bob.send_msg(alice_id, "hi alice").await;
    let object = alice.next().await;
    assert_one_chat(&object, (bob_id, "bob"), alice_id, "hi alice");
    assert_ne!(object["time"], "2016-01-01 00:00:00");

    // Classic to classic.
    let (mut carol, carol_id) = classic_user(&server, "carol").await;
    carol
        .send(&json!({"msgid": 6, "id": carol_id, "name": "carol", "toid": alice_id, "msg": "psst", "time": ""}))
        .await;
    assert_one_chat(&alice.next().await, (carol_id, "carol"), alice_id, "psst");

    // Presence and friend events have no classic form: alice sees only the next message.
    bob.ok(json!({"op": "add_friend", "id": alice_id})).await;
    alice
        .send(&json!({"msgid": 7, "id": alice_id, "friendid": bob_id}))
        .await;
    alice.barrier().await;
    let friends = bob.ok(json!({"op": "friends"})).await;
    assert_eq!(friends["friends"][0]["id"], alice_id, "{friends}");
    bob.ok(json!({"op": "logout"})).await;
    bob.login_name("bob", PASSWORD).await;
    bob.send_msg(alice_id, "still here").await;
    assert_one_chat(&alice.next().await, (bob_id, "bob"), alice_id, "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_chat_between_classic_and_native_both_ways() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = classic_user(&server, "alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (mut carol, carol_id) = classic_user(&server, "carol").await;

    // A classic user creates the group, and learns its id from a new LOGIN_ACK.
    alice
        .send(&json!({"msgid": 8, "id": alice_id, "groupname": "rust", "groupdesc": "crabs"}))
        .await;
    let ack = alice.login_ok(alice_id).await;
    let groups = texts(&ack, "groups");
    assert_eq!(groups.len(), 1, "{ack}");
    assert_eq!(groups[0]["groupname"], "rust");
    assert_eq!(groups[0]["groupdesc"], "crabs");
    let users = texts(&groups[0], "users");
    assert_eq!(
        users,
        vec![json!({"id": alice_id, "name": "alice", "state": "online", "role": "creator"})]
    );
    let group = groups[0]["id"].as_i64().expect("a group id");

    bob.ok(json!({"op": "join_group", "group": group})).await;
    carol
        .send(&json!({"msgid": 9, "id": carol_id, "groupid": group}))
        .await;
    carol.barrier().await;

    // Classic to every other member, native and classic.
    carol
        .send(&json!({"msgid": 10, "id": carol_id, "name": "carol", "groupid": group, "msg": "hello all", "time": ""}))
        .await;
    let event = bob.next_msg().await;
    assert_eq!(event["from"], carol_id, "{event}");
    assert_eq!(event["group"], group, "{event}");
    assert_eq!(event["text"], "hello all", "{event}");
    assert_group_chat(&alice.next().await, (carol_id, "carol"), group, "hello all");

    // Native to the classic members; the sender gets nothing back.
    bob.group_send(group, "hi crabs").await;
    assert_group_chat(&alice.next().await, (bob_id, "bob"), group, "hi crabs");
    assert_group_chat(&carol.next().await, (bob_id, "bob"), group, "hi crabs");

    // A non-member's group message is refused (and only logged).
    let (mut dave, dave_id) = classic_user(&server, "dave").await;
    dave.send(&json!({"msgid": 10, "id": dave_id, "groupid": group, "msg": "let me in"}))
        .await;
    dave.barrier().await;
    bob.group_send(group, "members only").await;
    assert_group_chat(&alice.next().await, (bob_id, "bob"), group, "members only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_split_across_writes_or_sharing_one() {
    let server = TestServer::start().await;
    let mut conn = Classic::connect(server.addr()).await;

    // One request in three writes, cut inside a key and inside a string.
    let request = br#"{"msgid":4,"name":"al{ice}\"","password":"secret-pw"}"#;
    conn.send_raw(&request[..5]).await;
    conn.send_raw(&request[5..24]).await;
    conn.send_raw(&request[24..]).await;
    conn.send_raw(b"\0").await;
    let alice_id = conn.next().await["id"].as_i64().expect("registered");

    // Three requests in one write, then one cut in the middle of the next write.
    let mut bytes = Vec::new();
    for name in ["bob", "carol", "dave"] {
        bytes.extend_from_slice(
            format!(r#"{{"msgid":4,"name":"{name}","password":"pw"}}"#).as_bytes(),
        );
        bytes.push(0);
    }
    bytes.extend_from_slice(br#"{"msgid":1,"id":"#);
    conn.send_raw(&bytes).await;
    let ids: Vec<i64> = [conn.next().await, conn.next().await, conn.next().await]
        .iter()
        .map(|ack| ack["id"].as_i64().unwrap_or_else(|| panic!("{ack}")))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    conn.send_raw(format!(r#"{alice_id},"password":"secret-pw"}}"#).as_bytes())
        .await;
    let ack = conn.next().await;
    assert_eq!(ack["errno"], 0, "{ack}");
    assert_eq!(ack["name"], "al{ice}\"", "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_newline_and_unterminated_requests() {
    let server = TestServer::start().await;
    let mut conn = Classic::connect(server.addr()).await;
    conn.send_raw(b"{\"msgid\":4,\"name\":\"a\",\"password\":\"pw\"}\0")
        .await;
    assert_eq!(conn.next().await["errno"], 0);
    conn.send_raw(b"{\"msgid\":4,\"name\":\"b\",\"password\":\"pw\"}\n")
        .await;
    assert_eq!(conn.next().await["errno"], 0);
    conn.send_raw(b"{\"msgid\":4,\"name\":\"c\",\"password\":\"pw\"}\r\n")
        .await;
    assert_eq!(conn.next().await["errno"], 0);
    conn.send_raw(b"{\"msgid\":4,\"name\":\"d\",\"password\":\"pw\"}")
        .await;
    assert_eq!(conn.next().await["errno"], 0);
    // Mixed and doubled separators, pretty-printed JSON.
    conn.send_raw(b"\0\n \0{\n  \"msgid\": 4,\n  \"name\": \"e\",\n  \"password\": \"pw\"\n}\n\0{\"msgid\":4,\"name\":\"f\",\"password\":\"pw\"}")
        .await;
    assert_eq!(conn.next().await["errno"], 0);
    assert_eq!(conn.next().await["errno"], 0);

    // A connection may start with a newline-terminated request too.
    let mut other = Classic::connect(server.addr()).await;
    other
        .send_raw(b"{\"msgid\":4,\"name\":\"g\",\"password\":\"pw\"}\n")
        .await;
    assert_eq!(other.next().await["errno"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_dropped_and_the_connection_lives() {
    let server = TestServer::start().await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (mut conn, alice_id) = classic_user(&server, "alice").await;
    let garbage: [&[u8]; 10] = [
        b"{\"msgid\":6,\"toid\":\0",                     // cut short by a NUL
        b"not json\0",                                   // not JSON
        b"[1,2,3]\0",                                    // not an object
        b"{\"msgid\":\"6\"}\0",                          // msgid not an integer
        b"{\"toid\":2}\0",                               // no msgid
        b"{\"msgid\":99}\0",                             // unknown msgid
        b"{\"msgid\":2,\"errno\":0}\0",                  // an ack is not a request
        b"{\"msgid\":6,\"toid\":\"x\",\"msg\":\"a\"}\0", // toid not an integer
        b"{\"msgid\":6,\"toid\":1}\0",                   // no msg
        b"\xff\xfe{\"msgid\":6,\"toid\":1,\"msg\":\"\xff\"}\0", // not UTF-8
    ];
    for bytes in garbage {
        conn.send_raw(bytes).await;
    }
    // Nothing came back; the connection lives and its next requests work.
    conn.send(&json!({"msgid": 6, "id": alice_id, "toid": bob_id, "msg": "still here"}))
        .await;
    let event = bob.next_msg().await;
    assert_eq!(event["text"], "still here", "{event}");
    let ack = conn.reg("carol").await;
    assert_eq!(ack["errno"], 0, "{ack}");
    // Sending to oneself or to no one fails in the op: logged, no reply, no harm.
    conn.send(&json!({"msgid": 6, "toid": alice_id, "msg": "me"}))
        .await;
    conn.send(&json!({"msgid": 6, "toid": 999_999, "msg": "nobody"}))
        .await;
    conn.barrier().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_first_request_does_not_hide_the_next_ones() {
    let server = TestServer::start().await;
    let (_, alice_id) = classic_user(&server, "alice").await;
    for first in [
        &b"{\"msgid\":1,\"id\":\0"[..],                // cut short by a NUL
        &b"{\"msgid\":1,\"password\":\"\xff\"}\0"[..], // not UTF-8
        &b"{\"msgid\":1,,}\0"[..],                     // not JSON
    ] {
        let mut conn = Classic::connect(server.addr()).await;
        // The first frame is dropped; the login right behind it is answered at once.
        let mut bytes = first.to_vec();
        bytes.extend_from_slice(
            json!({"msgid": 1, "id": alice_id, "password": PASSWORD})
                .to_string()
                .as_bytes(),
        );
        bytes.push(0);
        conn.send_raw(&bytes).await;
        let ack = conn.next().await;
        assert_eq!(ack["msgid"], 2, "{ack}");
        assert_eq!(ack["errno"], 0, "{ack}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_request_closes_that_connection_only() {
    let server = TestServer::start_with(|c| c.max_frame = 1024).await;
    let (mut alice, _) = classic_user(&server, "alice").await;
    let (mut bob, bob_id) = classic_user(&server, "bob").await;

    let long = "x".repeat(2000);
    alice
        .send(&json!({"msgid": 6, "toid": bob_id, "msg": long}))
        .await;
    assert_eq!(
        alice.expect_closed().await,
        Vec::<Value>::new(),
        "the classic protocol has no error reply: the connection just closes"
    );

    // A request that never ends is refused as soon as it passes the limit.
    let (mut carol, _) = classic_user(&server, "carol").await;
    carol.send_raw(b"{\"msgid\":6,\"msg\":\"").await;
    carol.send_raw(&[b'y'; 1100]).await;
    assert_eq!(carol.expect_closed().await, Vec::<Value>::new());

    // Others are unaffected.
    bob.barrier().await;
    let mut native = server.connect().await;
    native.login_name("alice", PASSWORD).await;
    native.send_msg(bob_id, "fine").await;
    assert_eq!(bob.next().await["msg"], "fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acting_user_is_the_sessions() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (mut mallory, mallory_id) = classic_user(&server, "mallory").await;

    // A ONE_CHAT claiming to be from alice is from mallory.
    mallory
        .send(&json!({"msgid": 6, "id": alice_id, "name": "alice", "toid": bob_id, "msg": "it's me, alice", "time": ""}))
        .await;
    let event = bob.next_msg().await;
    assert_eq!(event["from"], mallory_id, "{event}");
    assert_eq!(event["from_name"], "mallory", "{event}");

    // A LOGINOUT naming alice logs mallory out, not alice.
    mallory.send(&json!({"msgid": 3, "id": alice_id})).await;
    mallory
        .send(&json!({"msgid": 6, "id": mallory_id, "toid": bob_id, "msg": "after logout"}))
        .await;
    mallory.barrier().await;
    let online = alice.ok(json!({"op": "users"})).await;
    let online: Vec<i64> = crate::util::ids(&online["users"]);
    assert!(online.contains(&alice_id), "{online:?}");
    assert!(!online.contains(&mallory_id), "{online:?}");
    // The message sent after the logout was ignored: bob's next message is alice's.
    alice.send_msg(bob_id, "the real alice").await;
    let event = bob.next_msg().await;
    assert_eq!(event["text"], "the real alice", "{event}");

    // The connection stays open and can log in again.
    mallory.login_ok(mallory_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_before_login_are_ignored() {
    let server = TestServer::start().await;
    let (mut bob, bob_id) = server.user("bob").await;
    let mut conn = Classic::connect(server.addr()).await;
    let id = conn.register("alice").await;
    for request in [
        json!({"msgid": 6, "id": id, "toid": bob_id, "msg": "before login"}),
        json!({"msgid": 7, "id": id, "friendid": bob_id}),
        json!({"msgid": 8, "id": id, "groupname": "g", "groupdesc": ""}),
        json!({"msgid": 3, "id": id}),
    ] {
        conn.send(&request).await;
    }
    let ack = conn.login_ok(id).await;
    assert!(ack.get("friends").is_none(), "no friend was added: {ack}");
    assert!(ack.get("groups").is_none(), "no group was created: {ack}");
    conn.send(&json!({"msgid": 6, "id": id, "toid": bob_id, "msg": "after login"}))
        .await;
    let event = bob.next_msg().await;
    assert_eq!(event["text"], "after login", "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_login_kicks_the_first_session() {
    let server = TestServer::start().await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (mut first, alice_id) = classic_user(&server, "alice").await;

    let mut second = Classic::connect(server.addr()).await;
    second.login_ok(alice_id).await;
    assert_eq!(
        first.expect_closed().await,
        Vec::<Value>::new(),
        "the kicked session just closes"
    );
    bob.send_msg(alice_id, "to the new one").await;
    assert_one_chat(
        &second.next().await,
        (bob_id, "bob"),
        alice_id,
        "to the new one",
    );

    // A native login kicks a classic session too, and the other way round.
    let mut native = server.connect().await;
    native.login_name("alice", PASSWORD).await;
    second.expect_closed().await;
    let mut third = Classic::connect(server.addr()).await;
    third.login_ok(alice_id).await;
    native.expect_kicked("logged_in_elsewhere").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_written_to_a_classic_client_count_as_delivered() {
    let server = TestServer::start().await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (mut alice, alice_id) = classic_user(&server, "alice").await;
    let group = bob.create_group("g").await;
    alice.send(&json!({"msgid": 9, "groupid": group})).await;
    alice.barrier().await;

    // Live messages, one-to-one and group.
    bob.send_msg(alice_id, "one").await;
    bob.group_send(group, "two").await;
    assert_one_chat(&alice.next().await, (bob_id, "bob"), alice_id, "one");
    assert_group_chat(&alice.next().await, (bob_id, "bob"), group, "two");
    alice.barrier().await;
    drop(alice);

    // They do not come again at the next login.
    let mut alice = Classic::connect(server.addr()).await;
    let ack = alice.login_ok(alice_id).await;
    assert!(ack.get("offlinemsg").is_none(), "delivered again: {ack}");

    // Nor do those delivered inside a LOGIN_ACK.
    alice.logout().await;
    drop(alice);
    bob.send_msg(alice_id, "three").await;
    let mut alice = Classic::connect(server.addr()).await;
    let ack = alice.login_ok(alice_id).await;
    assert_eq!(texts(&ack, "offlinemsg").len(), 1, "{ack}");
    alice.barrier().await;
    drop(alice);
    let mut alice = Classic::connect(server.addr()).await;
    let ack = alice.login_ok(alice_id).await;
    assert!(ack.get("offlinemsg").is_none(), "delivered again: {ack}");

    // History still has them all.
    let history = bob.ok(json!({"op": "history", "with": alice_id})).await;
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_backlog_follows_the_login_ack() {
    let server = TestServer::start().await;
    let (mut bob, bob_id) = server.user("bob").await;
    let mut alice = Classic::connect(server.addr()).await;
    let alice_id = alice.register("alice").await;
    drop(alice);

    // About 150 KiB of offline messages: more than LOGIN_ACK carries.
    let text = "z".repeat(3000);
    let count = 50;
    for _ in 0..count {
        bob.send_msg(alice_id, &text).await;
    }
    let mut alice = Classic::connect(server.addr()).await;
    let ack = alice.login_ok(alice_id).await;
    let inside = texts(&ack, "offlinemsg").len();
    assert!(inside > 0 && inside < count, "{inside} in the ack");
    for _ in inside..count {
        assert_one_chat(&alice.next().await, (bob_id, "bob"), alice_id, &text);
    }
    alice.barrier().await;
}
