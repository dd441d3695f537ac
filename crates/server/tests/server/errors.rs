//! Malformed input, bad fields and limits: `bad_request` keeps the connection, a frame
//! over the limit gets `too_large` and a close, and nothing disturbs other users. Also the
//! framing: split writes, several requests in one write, `\r\n`.

use serde_json::{json, Value};

use crate::util::{error_code, TestServer, PASSWORD};

/// Sends `bytes` (one frame with its line ending, no rid) and returns the reply.
async fn reply_to_raw(conn: &mut crate::util::Conn, bytes: &[u8]) -> Value {
    conn.send_raw(bytes).await;
    conn.reply_for(&Value::Null).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_bad_request_and_the_connection_lives_on() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;

    let nested = format!("{}{}\n", "[".repeat(20_000), "]".repeat(20_000));
    let nested_object = format!(
        "{{\"op\":\"echo\",\"text\":\"x\",\"n\":{}\n",
        "{\"a\":".repeat(5_000)
    );
    let frames: Vec<Vec<u8>> = vec![
        b"not json\n".to_vec(),
        b"{\"op\":\"ping\"\n".to_vec(),
        b"[1,2]\n".to_vec(),
        b"[\"ping\"]\n".to_vec(),
        b"[\"echo\",null,\"text\"]\n".to_vec(),
        b"\"a string\"\n".to_vec(),
        b"42\n".to_vec(),
        b"null\n".to_vec(),
        b"{}\n".to_vec(),
        b"{\"op\":5}\n".to_vec(),
        b"{\"op\":null}\n".to_vec(),
        b"{\"op\":\"dance\"}\n".to_vec(),
        b"\xff\xfe\xfd\n".to_vec(),
        b"{\"op\":\"echo\",\"text\":\"\xc3\x28\"}\n".to_vec(),
        b"\x00\x01\x02\n".to_vec(),
        nested.into_bytes(),
        nested_object.into_bytes(),
        b"{\"op\":\"send\",\"to\":123456789012345678901234567890,\"text\":\"x\"}\n".to_vec(),
        b"{\"op\":\"send\",\"to\":1e400,\"text\":\"x\"}\n".to_vec(),
        b"{\"op\":\"send\",\"to\":-1.5,\"text\":\"x\"}\n".to_vec(),
        b"{\"op\":\"ping\",\"rid\":{\"a\":1}}\n".to_vec(),
        b"{\"op\":\"ping\",\"rid\":[1]}\n".to_vec(),
        b"{\"op\":\"ping\",\"rid\":true}\n".to_vec(),
    ];
    let mut wrong = Vec::new();
    for frame in &frames {
        let reply = reply_to_raw(&mut alice, frame).await;
        if error_code(&reply).as_deref() != Some("bad_request") || reply["rid"] != Value::Null {
            let shown = String::from_utf8_lossy(&frame[..frame.len().min(60)]).into_owned();
            wrong.push(format!("{shown:?} got {reply}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "frames that did not get bad_request with rid null:\n{}",
        wrong.join("\n")
    );

    // A huge number in a field nobody reads: any reply will do, as long as one comes.
    let reply = reply_to_raw(&mut alice, b"{\"op\":\"ping\",\"x\":1e999999999}\n").await;
    assert!(reply["ok"].is_boolean(), "{reply}");
    let reply = reply_to_raw(
        &mut alice,
        format!("{{\"op\":\"ping\",\"x\":{}}}\n", "9".repeat(10_000)).as_bytes(),
    )
    .await;
    assert!(reply["ok"].is_boolean(), "{reply}");

    // The connection and the session are intact; so is everyone else.
    alice.ok(json!({"op": "ping", "rid": "after"})).await;
    let me = alice.ok(json!({"op": "whoami"})).await;
    assert_eq!(me["user"]["id"], alice_id);
    let sent = alice.send_msg(bob_id, "still works").await;
    let msg = bob.next_msg().await;
    assert_eq!(msg["id"], sent["id"]);
    bob.ok(json!({"op": "echo", "text": "fine"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_out_of_range_get_bad_request() {
    let server = TestServer::start().await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (_bob, bob_id) = server.user("bob").await;
    let group = alice.create_group("g").await;
    let too_long = "a".repeat(4097);

    let bad = [
        // missing fields, wrong types
        json!({"op": "send", "to": bob_id}),
        json!({"op": "send", "text": "hi"}),
        json!({"op": "send", "to": "bob", "text": "hi"}),
        json!({"op": "send", "to": bob_id, "text": 5}),
        json!({"op": "send", "to": bob_id, "text": null}),
        json!({"op": "add_friend"}),
        json!({"op": "add_friend", "id": "1"}),
        json!({"op": "remove_friend", "id": [bob_id]}),
        json!({"op": "join_group"}),
        json!({"op": "leave_group", "group": true}),
        json!({"op": "delete_group", "group": "x"}),
        json!({"op": "group_members"}),
        json!({"op": "group_send", "group": group}),
        json!({"op": "create_group"}),
        json!({"op": "create_group", "name": 3}),
        json!({"op": "ack"}),
        json!({"op": "ack", "id": "x"}),
        json!({"op": "echo"}),
        json!({"op": "echo", "text": {}}),
        json!({"op": "login", "name": 1, "password": PASSWORD}),
        // out of range
        json!({"op": "send", "to": bob_id, "text": ""}),
        json!({"op": "send", "to": bob_id, "text": too_long}),
        json!({"op": "group_send", "group": group, "text": ""}),
        json!({"op": "group_send", "group": group, "text": too_long}),
        json!({"op": "history", "with": bob_id, "limit": 0}),
        json!({"op": "history", "with": bob_id, "limit": 101}),
        json!({"op": "history", "with": bob_id, "limit": -1}),
        json!({"op": "history", "group": group, "limit": 0}),
        json!({"op": "history"}),
        // oneself
        json!({"op": "add_friend", "id": alice_id}),
        json!({"op": "send", "to": alice_id, "text": "me"}),
    ];
    for req in bad {
        alice.expect_err(req, "bad_request").await;
    }

    // The limits themselves are allowed: max_text characters (not bytes), limit 1 and 100.
    let longest = "é".repeat(4096);
    let sent = alice.send_msg(bob_id, &longest).await;
    let page = alice
        .ok(json!({"op": "history", "with": bob_id, "limit": 1}))
        .await;
    assert_eq!(page["messages"][0]["id"], sent["id"]);
    assert_eq!(page["messages"][0]["text"], longest.as_str());
    alice
        .ok(json!({"op": "history", "with": bob_id, "limit": 100}))
        .await;
    alice.ok(json!({"op": "whoami"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_checks_name_and_password() {
    let server = TestServer::start().await;
    let mut conn = server.connect().await;
    let bad = [
        json!({"op": "register", "name": "", "password": PASSWORD}),
        json!({"op": "register", "name": "a".repeat(33), "password": PASSWORD}),
        json!({"op": "register", "name": "bell\u{7}", "password": PASSWORD}),
        json!({"op": "register", "name": "new\nline", "password": PASSWORD}),
        json!({"op": "register", "name": "tab\tname", "password": PASSWORD}),
        json!({"op": "register", "name": "del\u{7f}", "password": PASSWORD}),
        json!({"op": "register", "name": "okname", "password": ""}),
        json!({"op": "register", "name": "okname", "password": "p".repeat(129)}),
        json!({"op": "register", "name": "okname"}),
        json!({"op": "register", "password": PASSWORD}),
        json!({"op": "register", "name": 7, "password": PASSWORD}),
        json!({"op": "login"}),
        json!({"op": "login", "password": PASSWORD}),
        json!({"op": "login", "name": "okname"}),
        json!({"op": "login", "id": "1", "password": PASSWORD}),
    ];
    for req in bad {
        conn.expect_err(req, "bad_request").await;
    }
    // 32 characters (not bytes) and a 128-character password are fine.
    let name = "ü".repeat(32);
    let password = "p".repeat(128);
    let id = conn.register(&name, &password).await;
    let reply = conn.login_name(&name, &password).await;
    assert_eq!(reply["user"]["id"], id);
    // Nothing was created by the refused registers.
    let mut other = server.connect().await;
    other
        .expect_err(
            json!({"op": "login", "name": "okname", "password": PASSWORD}),
            "auth_failed",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_limit_gets_too_large_then_close() {
    let server = TestServer::start_with(|c| c.max_frame = 1024).await;
    let (mut bob, _) = server.user("bob").await;
    let mut conn = server.connect().await;

    // Exactly the limit is accepted (the line ending does not count).
    let prefix = r#"{"op":"echo","rid":1,"text":""#;
    let suffix = r#""}"#;
    let text = "x".repeat(1024 - prefix.len() - suffix.len());
    let line = format!("{prefix}{text}{suffix}");
    assert_eq!(line.len(), 1024);
    conn.send_raw(format!("{line}\r\n").as_bytes()).await;
    let reply = conn.reply_for(&json!(1)).await;
    assert_eq!(reply["text"], text.as_str(), "{reply}");

    // One byte more is refused, and the server closes the connection.
    let line = format!(r#"{{"op":"echo","rid":2,"text":"{text}x"}}"#);
    assert_eq!(line.len(), 1025);
    conn.send_raw(format!("{line}\n").as_bytes()).await;
    let frames = conn.expect_closed().await;
    let replies: Vec<&Value> = frames.iter().filter(|f| f.get("ok").is_some()).collect();
    assert_eq!(replies.len(), 1, "{frames:?}");
    assert_eq!(replies[0]["rid"], Value::Null, "{frames:?}");
    assert_eq!(
        error_code(replies[0]).as_deref(),
        Some("too_large"),
        "{frames:?}"
    );
    for frame in &frames {
        assert!(
            frame.get("ok").is_some() || frame["event"] == "kicked",
            "unexpected frame before the close: {frame}"
        );
    }

    // A longer frame without any line end is refused too, without waiting for its end.
    let mut conn = server.connect().await;
    conn.send_raw(&vec![b'a'; 4096]).await;
    let frames = conn.expect_closed().await;
    assert!(
        frames
            .iter()
            .any(|f| error_code(f).as_deref() == Some("too_large")),
        "{frames:?}"
    );

    // Others are unaffected.
    bob.ok(json!({"op": "ping"})).await;
    let mut fresh = server.connect().await;
    fresh.ok(json!({"op": "echo", "text": "hi"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_writes_batched_writes_and_crlf() {
    let server = TestServer::start().await;
    let mut conn = server.connect().await;

    // One request in three writes.
    conn.send_raw(b"{\"op\":\"ec").await;
    conn.send_raw(b"ho\",\"rid\":1,\"te").await;
    conn.send_raw(b"xt\":\"split\"}\n").await;
    let reply = conn.reply_for(&json!(1)).await;
    assert_eq!(reply["text"], "split");

    // Several requests in one write, with `\n`, `\r\n` and a blank line between.
    conn.send_raw(
        b"{\"op\":\"echo\",\"rid\":2,\"text\":\"a\"}\n{\"op\":\"ping\",\"rid\":3}\r\n\r\n{\"op\":\"echo\",\"rid\":4,\"text\":\"c\"}\r\n",
    )
    .await;
    assert_eq!(conn.reply_for(&json!(2)).await["text"], "a");
    assert_eq!(conn.reply_for(&json!(3)).await["ok"], true);
    assert_eq!(conn.reply_for(&json!(4)).await["text"], "c");

    // A multi-byte character split across writes.
    let bytes = "{\"op\":\"echo\",\"rid\":5,\"text\":\"日本\"}\n".as_bytes();
    let cut = bytes.iter().position(|b| *b >= 0x80).unwrap() + 1;
    conn.send_raw(&bytes[..cut]).await;
    conn.send_raw(&bytes[cut..]).await;
    assert_eq!(conn.reply_for(&json!(5)).await["text"], "日本");

    // A whole session in one write.
    let mut batch = Vec::new();
    for (rid, req) in [
        (
            10,
            json!({"op": "register", "name": "alice", "password": PASSWORD}),
        ),
        (
            11,
            json!({"op": "login", "name": "alice", "password": PASSWORD}),
        ),
        (12, json!({"op": "whoami"})),
    ] {
        let mut req = req;
        req["rid"] = json!(rid);
        batch.extend_from_slice(req.to_string().as_bytes());
        batch.extend_from_slice(b"\r\n");
    }
    conn.send_raw(&batch).await;
    let id = conn.reply_for(&json!(10)).await["user"]["id"].clone();
    assert_eq!(conn.reply_for(&json!(11)).await["ok"], true);
    assert_eq!(conn.reply_for(&json!(12)).await["user"]["id"], id);
}
