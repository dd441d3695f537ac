//! The chat protocol over WebSocket (`GET /ws`): the same session as TCP, one JSON
//! object per text message; chat between a WebSocket client and a TCP one; limits; and
//! the Origin check against cross-site WebSocket hijacking.

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::util::{TestServer, PASSWORD, WAIT};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(server: &TestServer, origin: Option<&str>) -> Result<Ws, String> {
    let url = format!("ws://{}/ws", server.http_addr());
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    if let Some(origin) = origin {
        request.headers_mut().insert(
            "origin",
            origin.parse().map_err(|_| "bad origin".to_string())?,
        );
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

/// Sends `req` and returns the reply with its rid, keeping events aside.
async fn request(ws: &mut Ws, events: &mut Vec<Value>, rid: i64, mut req: Value) -> Value {
    req["rid"] = json!(rid);
    ws.send(Message::text(req.to_string())).await.expect("send");
    loop {
        let frame = next(ws).await.expect("a reply");
        if frame["rid"] == rid {
            return frame;
        }
        events.push(frame);
    }
}

/// The next JSON text message, or `None` when the connection closes.
async fn next(ws: &mut Ws) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("nothing from the server in time");
        match message {
            Some(Ok(Message::Text(text))) => {
                return Some(serde_json::from_str(&text).expect("one JSON object"))
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_chats_with_a_tcp_client() {
    let server = TestServer::start_with_http().await;
    let (mut bob, bob_id) = server.user("bob").await;
    let mut ws = connect(&server, None).await.expect("connect");
    let mut events = Vec::new();
    let reply = request(
        &mut ws,
        &mut events,
        1,
        json!({"op": "register", "name": "alice", "password": PASSWORD}),
    )
    .await;
    let alice_id = reply["user"]["id"].as_i64().expect("id");
    let reply = request(
        &mut ws,
        &mut events,
        2,
        json!({"op": "login", "name": "alice", "password": PASSWORD}),
    )
    .await;
    assert_eq!(reply["ok"], true, "{reply}");

    // WebSocket to TCP, and back: one message each way, each a text message of its own.
    let reply = request(
        &mut ws,
        &mut events,
        3,
        json!({"op": "send", "to": bob_id, "text": "hello over ws"}),
    )
    .await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(bob.next_msg().await["text"], "hello over ws");
    bob.send_msg(alice_id, "hello over tcp").await;
    let msg = loop {
        if let Some(pos) = events.iter().position(|e| e["event"] == "msg") {
            break events.remove(pos);
        }
        events.push(next(&mut ws).await.expect("an event"));
    };
    assert_eq!(msg["text"], "hello over tcp");
    assert_eq!(msg["from"], bob_id);

    // Counted as a WebSocket connection.
    let (_, metrics) = server.http_get("/metrics").await;
    assert!(
        metrics.contains("chatd_connections{transport=\"ws\"} 1"),
        "{metrics}"
    );

    // A bad request gets its answer; the session goes on.
    ws.send(Message::text("{not json")).await.expect("send");
    let bad = next(&mut ws).await.expect("a reply");
    assert_eq!(bad["error"]["code"], "bad_request", "{bad}");
    let reply = request(&mut ws, &mut events, 4, json!({"op": "whoami"})).await;
    assert_eq!(reply["user"]["id"], alice_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_frame_limit_closes_the_session() {
    let server = TestServer::start_with_http_and(|c| c.max_frame = 1024).await;
    let mut ws = connect(&server, None).await.expect("connect");
    let big = format!("{{\"op\":\"echo\",\"text\":\"{}\"}}", "x".repeat(4096));
    let _ = ws.send(Message::text(big)).await;
    // Whatever arrives before the close, the session ends; others are not affected.
    while next(&mut ws).await.is_some() {}
    let mut other = connect(&server, None).await.expect("connect");
    let mut events = Vec::new();
    let reply = request(&mut other, &mut events, 1, json!({"op": "ping"})).await;
    assert_eq!(reply["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_other_sites_may_not_open_a_session() {
    let server = TestServer::start_with_http_and(|c| {
        c.ws_origins = vec!["https://chat.example.org".into()];
    })
    .await;
    let refused = connect(&server, Some("https://evil.example")).await;
    let err = refused.expect_err("a cross-site page opened a session");
    assert!(err.contains("403"), "{err}");
    // The allowed origin, the server's own pages and non-browsers get in.
    connect(&server, Some("https://chat.example.org"))
        .await
        .expect("allowed origin");
    let own = format!("http://{}", server.http_addr());
    connect(&server, Some(&own)).await.expect("own origin");
    connect(&server, None).await.expect("no origin");
}
