//! A raw connection to a node (or to nginx in front of the nodes) speaking JSON lines.
//! Replies are matched by rid; events that arrive meanwhile are kept, in order, for
//! [`Conn::next_event`]. Every read has a timeout, so a bug fails a test instead of
//! hanging it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::util::WAIT;

/// The password of every test user.
pub(crate) const PASSWORD: &str = "secret-pw";

pub(crate) struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Events read while waiting for something else, oldest first.
    events: VecDeque<Value>,
    /// Replies read while waiting for another rid.
    replies: Vec<Value>,
    next_rid: u64,
    closed: bool,
    /// Shown in failures: which user on which node.
    label: String,
}

impl Conn {
    pub(crate) async fn connect(addr: SocketAddr, label: &str) -> Conn {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("{label}: connect to {addr} timed out"))
            .unwrap_or_else(|e| panic!("{label}: connect to {addr}: {e}"));
        Conn::over(stream, label)
    }

    /// A connection from `source`, another address of 127.0.0.0/8 than 127.0.0.1: to the
    /// server (and the limits it keys on addresses) another client host.
    pub(crate) async fn connect_from(addr: SocketAddr, source: &str, label: &str) -> Conn {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        let source: std::net::IpAddr = source.parse().expect("source address");
        socket
            .bind(SocketAddr::new(source, 0))
            .unwrap_or_else(|e| panic!("{label}: bind {source}: {e}"));
        let stream = tokio::time::timeout(WAIT, socket.connect(addr))
            .await
            .unwrap_or_else(|_| panic!("{label}: connect to {addr} timed out"))
            .unwrap_or_else(|e| panic!("{label}: connect to {addr}: {e}"));
        Conn::over(stream, label)
    }

    fn over(stream: TcpStream, label: &str) -> Conn {
        stream.set_nodelay(true).expect("nodelay");
        let (read, write) = stream.into_split();
        Conn {
            reader: BufReader::new(read),
            writer: write,
            events: VecDeque::new(),
            replies: Vec::new(),
            next_rid: 1,
            closed: false,
            label: label.to_string(),
        }
    }

    /// Writes one JSON frame and its `\n`.
    pub(crate) async fn send(&mut self, frame: &Value) {
        let mut line = serde_json::to_vec(frame).expect("json");
        line.push(b'\n');
        self.writer.write_all(&line).await.expect("write");
        self.writer.flush().await.expect("flush");
    }

    /// Reads one frame within `wait`; `None` when the connection ends.
    async fn read(&mut self, wait: Duration) -> Option<Value> {
        if self.closed {
            return None;
        }
        let mut line = Vec::new();
        let n = tokio::time::timeout(wait, self.reader.read_until(b'\n', &mut line))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{}: nothing from the server within {wait:?}; events not taken: {:?}",
                    self.label, self.events
                )
            });
        match n {
            Ok(0) | Err(_) => {
                self.closed = true;
                None
            }
            Ok(_) if line.last() != Some(&b'\n') => {
                self.closed = true;
                None
            }
            Ok(_) => Some(serde_json::from_slice(&line).unwrap_or_else(|e| {
                panic!(
                    "{}: a line that is not JSON ({e}): {:?}",
                    self.label,
                    String::from_utf8_lossy(&line)
                )
            })),
        }
    }

    fn stash(&mut self, frame: Value) {
        if frame.get("event").is_some() {
            self.events.push_back(frame);
        } else {
            self.replies.push(frame);
        }
    }

    /// Sends a request (with a fresh rid) and returns its reply.
    pub(crate) async fn request(&mut self, mut req: Value) -> Value {
        let rid = json!(self.next_rid);
        self.next_rid += 1;
        req["rid"] = rid.clone();
        self.send(&req).await;
        loop {
            if let Some(at) = self.replies.iter().position(|r| r["rid"] == rid) {
                return self.replies.remove(at);
            }
            match self.read(WAIT).await {
                Some(frame) => self.stash(frame),
                None => panic!(
                    "{}: connection closed while waiting for the reply to {req}; events: {:?}",
                    self.label, self.events
                ),
            }
        }
    }

    /// Sends a request that must succeed; returns the reply.
    pub(crate) async fn ok(&mut self, req: Value) -> Value {
        let shown = req.to_string();
        let reply = self.request(req).await;
        assert_eq!(reply["ok"], true, "{}: {shown} failed: {reply}", self.label);
        reply
    }

    /// The next event, waiting up to `wait` for it.
    pub(crate) async fn next_event_within(&mut self, wait: Duration) -> Value {
        loop {
            if let Some(event) = self.events.pop_front() {
                return event;
            }
            match self.read(wait).await {
                Some(frame) => self.stash(frame),
                None => panic!(
                    "{}: connection closed while waiting for an event",
                    self.label
                ),
            }
        }
    }

    /// The next event.
    pub(crate) async fn next_event(&mut self) -> Value {
        self.next_event_within(WAIT).await
    }

    /// Skips events until one for which `pred` holds, waiting up to `wait` for each;
    /// returns it and the events skipped.
    pub(crate) async fn wait_for(
        &mut self,
        wait: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> (Value, Vec<Value>) {
        let mut skipped = Vec::new();
        loop {
            let event = self.next_event_within(wait).await;
            if pred(&event) {
                return (event, skipped);
            }
            skipped.push(event);
        }
    }

    /// Skips events until one named `name`, and returns it.
    pub(crate) async fn wait_event(&mut self, name: &str) -> Value {
        self.wait_for(WAIT, |e| e["event"] == name).await.0
    }

    /// Waits for the `presence` event of `user` with `online`, skipping other events.
    pub(crate) async fn wait_presence(&mut self, user: i64, online: bool, wait: Duration) {
        self.wait_for(wait, |e| {
            e["event"] == "presence" && e["user"] == user && e["online"] == online
        })
        .await;
    }

    /// The next `msg` event, skipping other events.
    pub(crate) async fn next_msg(&mut self) -> Value {
        self.wait_event("msg").await
    }

    /// Waits for `kicked` with `reason`, then for the close.
    pub(crate) async fn expect_kicked(&mut self, reason: &str) {
        let mut frames: Vec<Value> = self.events.drain(..).collect();
        while let Some(frame) = self.read(WAIT).await {
            frames.push(frame);
        }
        let last = frames.last().cloned().unwrap_or(Value::Null);
        assert_eq!(
            last["event"], "kicked",
            "{}: kicked must come last: {frames:?}",
            self.label
        );
        assert_eq!(last["reason"], reason, "{}: {frames:?}", self.label);
    }

    /// Sends `req` and checks that it fails with `code`.
    pub(crate) async fn expect_err(&mut self, req: Value, code: &str) {
        let reply = self.request(req).await;
        assert_eq!(reply["ok"], false, "{}: {reply}", self.label);
        assert_eq!(reply["error"]["code"], code, "{}: {reply}", self.label);
    }

    /// Registers `name`; returns its id.
    pub(crate) async fn register(&mut self, name: &str) -> i64 {
        let reply = self
            .ok(json!({"op": "register", "name": name, "password": PASSWORD}))
            .await;
        reply["user"]["id"].as_i64().expect("numeric user id")
    }

    /// Logs `name` in; returns the reply and the messages delivered before `synced`.
    pub(crate) async fn login(&mut self, name: &str) -> (Value, Vec<Value>) {
        let reply = self
            .ok(json!({"op": "login", "name": name, "password": PASSWORD}))
            .await;
        let mut pending = Vec::new();
        loop {
            let event = self.next_event().await;
            match event["event"].as_str() {
                Some("synced") => return (reply, pending),
                Some("msg") => pending.push(event),
                _ => {}
            }
        }
    }

    /// Sends a one-to-one message; returns its id.
    pub(crate) async fn send_msg(&mut self, to: i64, text: &str) -> i64 {
        let reply = self.ok(json!({"op": "send", "to": to, "text": text})).await;
        reply["msg"]["id"].as_i64().expect("message id")
    }

    /// Sends a group message; returns its id.
    pub(crate) async fn group_send(&mut self, group: i64, text: &str) -> i64 {
        let reply = self
            .ok(json!({"op": "group_send", "group": group, "text": text}))
            .await;
        reply["msg"]["id"].as_i64().expect("message id")
    }

    /// Acks everything up to `id`.
    pub(crate) async fn ack(&mut self, id: i64) {
        self.ok(json!({"op": "ack", "id": id})).await;
    }

    /// The user's friends as `(id, online)`, sorted by id.
    pub(crate) async fn friends(&mut self) -> Vec<(i64, bool)> {
        let reply = self.ok(json!({"op": "friends"})).await;
        let mut friends: Vec<(i64, bool)> = reply["friends"]
            .as_array()
            .expect("friends array")
            .iter()
            .map(|f| {
                (
                    f["id"].as_i64().expect("friend id"),
                    f["online"].as_bool().expect("online flag"),
                )
            })
            .collect();
        friends.sort_unstable();
        friends
    }

    /// The ids of the users online now, sorted.
    pub(crate) async fn users(&mut self) -> Vec<i64> {
        let reply = self.ok(json!({"op": "users"})).await;
        let mut ids: Vec<i64> = reply["users"]
            .as_array()
            .expect("users array")
            .iter()
            .map(|u| u["id"].as_i64().expect("user id"))
            .collect();
        ids.sort_unstable();
        ids
    }
}

/// Checks a `msg` event: its id, sender and text.
pub(crate) fn assert_msg(event: &Value, id: i64, from: i64, text: &str) {
    assert_eq!(event["event"], "msg", "{event}");
    assert_eq!(event["id"], id, "{event}");
    assert_eq!(event["from"], from, "{event}");
    assert_eq!(event["text"], text, "{event}");
}

/// Makes two logged-in users friends: `a` asks, `b` sees the request (on whatever node)
/// and accepts, `a` is told.
pub(crate) async fn befriend(a: &mut Conn, a_id: i64, b: &mut Conn, b_id: i64) {
    let reply = a.ok(json!({"op": "add_friend", "id": b_id})).await;
    assert_eq!(reply["requested"], true, "{reply}");
    let request = b.wait_event("friend_request").await;
    assert_eq!(request["from"]["id"], a_id, "{request}");
    let reply = b.ok(json!({"op": "add_friend", "id": a_id})).await;
    assert_eq!(reply["friend"]["id"], a_id, "{reply}");
    assert_eq!(reply["friend"]["online"], true, "{reply}");
    let added = a.wait_event("friend_added").await;
    assert_eq!(added["friend"]["id"], b_id, "{added}");
    assert_eq!(added["friend"]["online"], true, "{added}");
}
