//! `GET /ws`: protocol version 1 over WebSocket, one JSON object per text message,
//! through the same session loop as TCP ([`crate::session::serve_frames`]), with the
//! same limits: the frame size (as the message size), the request rate, the login and
//! idle timeouts, the outbound queue and its slow-consumer rule, the connection limit.
//!
//! The session writes JSON lines; [`LineSink`] turns each line into one text message.
//! Buffers are kept small (the library's defaults are 128 KiB a connection): an idle
//! session must cost little whatever its transport (see docs/BENCHMARKS.md).
//!
//! A browser sends `Origin`: a page from another site must not be able to open a
//! session with the user's cookies or network position (cross-site WebSocket
//! hijacking), so only the allowed origins (`--ws-origin`) and this server's own pages
//! get in. Clients that are not browsers send no `Origin` and are let in.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use chat_proto::codec::FrameError;
use futures::stream::SplitSink;
use futures::{Sink, Stream, StreamExt};
use tokio::io::AsyncWrite;

use super::tls::Peer;
use super::Shared;
use crate::accept::{self, FrameSource};

/// The read buffer a WebSocket connection starts with (the library allocates it up
/// front, 128 KiB by default). Small: a request is a few hundred bytes, and the buffer
/// grows for a larger one. Writes are not buffered: the session batches its own.
const WS_READ_BUFFER: usize = 512;
/// What may wait unwritten on a slow WebSocket before writes push back.
const WS_WRITE_LIMIT: usize = 64 * 1024;

pub(crate) async fn upgrade(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&headers, &shared.ctx.config.ws_origins) {
        tracing::info!(%peer, "ws: refused a cross-site origin");
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let Ok(slot) = shared.gate.slots.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "server full\n").into_response();
    };
    let Some(address_slot) = shared.ctx.address_slots.take(peer.ip()) else {
        tracing::info!(%peer, "ws: too many connections from one address");
        return (StatusCode::TOO_MANY_REQUESTS, "too many connections\n").into_response();
    };
    let slots = (slot, address_slot);
    let max_frame = shared.ctx.config.max_frame;
    ws.read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(shared.ctx.config.max_frame.max(WS_WRITE_LIMIT) * 16)
        .max_message_size(max_frame)
        .max_frame_size(max_frame)
        .on_upgrade(move |socket| {
            let tracker = shared.gate.sessions.clone();
            tracker.track_future(serve(shared, socket, peer, slots))
        })
}

async fn serve(
    shared: Arc<Shared>,
    socket: WebSocket,
    peer: SocketAddr,
    slots: (
        tokio::sync::OwnedSemaphorePermit,
        crate::limits::AddressSlot,
    ),
) {
    let _open = shared.ctx.metrics.connection("ws");
    let max_frame = shared.ctx.config.max_frame;
    let (sink, stream) = socket.split();
    let frames = stream.filter_map(move |message| async move { frame_of(message, max_frame) });
    // Until login, the smaller limit for frames holds here too (the library's own limit
    // is the logged-in one).
    let frames = Limited {
        inner: Box::pin(frames),
        max: shared.ctx.config.max_frame_before_login.min(max_frame),
    };
    let writer = LineSink {
        sink,
        line: Vec::new(),
        sent: 0,
    };
    accept::serve_frames(
        shared.ctx.clone(),
        frames,
        writer,
        peer.ip(),
        slots,
        shared.gate.stop.clone(),
    )
    .await;
}

/// Inbound messages under the session's current frame limit.
struct Limited<S> {
    inner: Pin<Box<S>>,
    max: usize,
}

impl<S: Stream<Item = Result<BytesMut, FrameError>>> Stream for Limited<S> {
    type Item = Result<BytesMut, FrameError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let max = self.max;
        match ready!(self.inner.as_mut().poll_next(cx)) {
            Some(Ok(frame)) if frame.len() > max => {
                Poll::Ready(Some(Err(FrameError::TooLarge { limit: max })))
            }
            other => Poll::Ready(other),
        }
    }
}

impl<S: Stream<Item = Result<BytesMut, FrameError>>> FrameSource for Limited<S> {
    fn set_max_frame(&mut self, max: usize) {
        self.max = max;
    }
}

/// One inbound WebSocket message as a request frame; `None` for control messages.
fn frame_of(
    message: Result<Message, axum::Error>,
    max_frame: usize,
) -> Option<Result<BytesMut, FrameError>> {
    match message {
        Ok(Message::Text(text)) => Some(Ok(BytesMut::from(text.as_bytes()))),
        // A client library may send JSON as binary; the parser checks it is UTF-8.
        Ok(Message::Binary(bytes)) => Some(Ok(BytesMut::from(&bytes[..]))),
        Ok(Message::Ping(_) | Message::Pong(_)) => None,
        Ok(Message::Close(_)) => Some(Err(FrameError::Io(io::ErrorKind::ConnectionAborted.into()))),
        Err(e) => {
            let text = e.to_string();
            if text.contains("too long") || text.contains("Space limit") {
                Some(Err(FrameError::TooLarge { limit: max_frame }))
            } else {
                Some(Err(FrameError::Io(io::Error::other(text))))
            }
        }
    }
}

/// Whether a request's `Origin` may open a session: none (not a browser), this server's
/// own (the same host as `Host`), or one of `allowed` (`*` allows every origin).
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

/// The session's writer: each JSON line it writes goes out as one text message.
struct LineSink {
    sink: SplitSink<WebSocket, Message>,
    /// Bytes written and not sent yet: whole lines, then the start of the next.
    line: Vec<u8>,
    /// How many bytes of `line` are sent.
    sent: usize,
}

impl LineSink {
    /// Sends every whole line buffered; `Pending` while the socket cannot take more.
    fn send_lines(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(end) = self.line[self.sent..].iter().position(|b| *b == b'\n') {
            ready!(Pin::new(&mut self.sink).poll_ready(cx)).map_err(io::Error::other)?;
            let line = &self.line[self.sent..self.sent + end];
            let text = std::str::from_utf8(line)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
                .to_owned();
            Pin::new(&mut self.sink)
                .start_send(Message::Text(text.into()))
                .map_err(io::Error::other)?;
            self.sent += end + 1;
        }
        if self.sent > 0 {
            self.line.drain(..self.sent);
            self.sent = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for LineSink {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What was written before goes first: the socket's backpressure reaches the
        // session here.
        ready!(this.send_lines(cx))?;
        this.line.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.send_lines(cx))?;
        Pin::new(&mut this.sink)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.send_lines(cx))?;
        Pin::new(&mut this.sink)
            .poll_close(cx)
            .map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().expect("host"));
        if let Some(origin) = origin {
            h.insert(header::ORIGIN, origin.parse().expect("origin"));
        }
        h
    }

    #[test]
    fn origins_are_checked_against_the_host_and_the_allow_list() {
        let allowed = vec!["https://chat.example.org".to_string()];
        assert!(origin_allowed(&headers(None, "127.0.0.1:8080"), &[]));
        assert!(origin_allowed(
            &headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080"),
            &[]
        ));
        assert!(!origin_allowed(
            &headers(Some("https://evil.example"), "127.0.0.1:8080"),
            &allowed
        ));
        assert!(origin_allowed(
            &headers(Some("https://chat.example.org"), "10.0.0.5:8080"),
            &allowed
        ));
        assert!(origin_allowed(
            &headers(Some("https://any.example"), "h"),
            &["*".to_string()]
        ));
    }
}
