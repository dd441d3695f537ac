//! How a session's frames are spelled on the wire.
//!
//! Inside, a session speaks protocol version 1: typed requests in, reply and event frames
//! (JSON lines) out. A [`Dialect`] translates at the edge, so every wire protocol shares
//! the one session loop: [`Native`] is version 1 itself and costs nothing; the classic
//! `msgid` protocol is another dialect ([`crate::classic`]). [`sniff`] tells from a connection's first bytes
//! which protocol it speaks.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use chat_proto::request::{self, BadRequest, Request, Rid};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::hub::Frame;

/// One inbound frame, read.
pub(crate) enum Inbound {
    /// A request to run.
    Request(Rid, Request),
    /// A malformed frame to answer with `bad_request`.
    Bad(BadRequest),
    /// A frame to drop without an answer (the dialect has logged why).
    Ignore,
}

/// Translates between the wire and protocol version 1.
pub(crate) trait Dialect: Send + 'static {
    /// Reads one inbound frame (without its delimiter).
    fn decode(&mut self, frame: &[u8], logged_in: bool) -> Inbound;
    /// Spells the version-1 reply `native` to a request of kind `op` into `out` (or
    /// nothing, for a protocol without that reply). `op` is empty for a malformed frame.
    fn reply(&mut self, op: &'static str, native: &[u8], out: &mut Vec<u8>);
    /// Spells a pushed frame (an event or a message) into `out`, or nothing.
    fn event(&mut self, frame: &Frame, out: &mut Vec<u8>);
    /// How many friends, and members per group, the login reply lists (the rest are
    /// paged with `friends` and `group_members`).
    fn login_lists(&self) -> (usize, usize) {
        (
            chat_proto::reply::LOGIN_FRIENDS,
            chat_proto::types::INLINE_MEMBERS,
        )
    }

    /// Whether a message counts as delivered once written, for clients that cannot ack.
    fn acks_on_write(&self) -> bool {
        false
    }
    /// `Some(byte)` when every object this dialect spells ends with `byte`, which occurs
    /// nowhere else: the session then writes each object with its own write, for clients
    /// that read one object per `recv`. `None` (native): whatever is ready goes in one write.
    fn frame_end(&self) -> Option<u8> {
        None
    }
}

/// Protocol version 1 as it is.
#[derive(Debug, Default)]
pub(crate) struct Native;

impl Dialect for Native {
    fn decode(&mut self, frame: &[u8], _logged_in: bool) -> Inbound {
        match request::parse(frame) {
            Ok((rid, req)) => Inbound::Request(rid, req),
            Err(bad) => Inbound::Bad(bad),
        }
    }

    fn reply(&mut self, _op: &'static str, native: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(native);
    }

    fn event(&mut self, frame: &Frame, out: &mut Vec<u8>) {
        out.extend_from_slice(&frame.bytes);
    }
}

/// The protocol a connection speaks, told by its first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// JSON lines with `op` (version 1).
    Native,
    /// The classic muduo chat server's JSON with `msgid`.
    Classic,
}

/// Decides the protocol from the first bytes of a connection, or `None` if more bytes are
/// needed: a first JSON object with a `msgid` field means the classic protocol; anything
/// else (including garbage, which the native path answers) means version 1.
pub(crate) fn sniff(first: &[u8]) -> Option<Protocol> {
    let start = first
        .iter()
        .position(|b| !b.is_ascii_whitespace() && *b != 0)?;
    let rest = &first[start..];
    if rest[0] != b'{' {
        return Some(Protocol::Native);
    }
    #[derive(serde::Deserialize)]
    struct Probe {
        msgid: Option<serde::de::IgnoredAny>,
    }
    // A NUL ends a classic request whatever came before it: judge the first frame alone,
    // and a malformed one that names a `msgid` still means a classic client (its codec
    // drops that frame and reads on).
    if let Some(end) = rest.iter().position(|b| *b == 0) {
        let frame = &rest[..end];
        return match serde_json::from_slice::<Probe>(frame) {
            Ok(Probe { msgid: Some(_) }) => Some(Protocol::Classic),
            Err(_) if contains(frame, b"\"msgid\"") => Some(Protocol::Classic),
            _ => Some(Protocol::Native),
        };
    }
    let mut objects = serde_json::Deserializer::from_slice(rest).into_iter::<Probe>();
    match objects.next() {
        Some(Ok(Probe { msgid: Some(_) })) => Some(Protocol::Classic),
        Some(Err(e)) if e.is_eof() => None,
        None => None,
        _ => Some(Protocol::Native),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A reader that first gives back bytes already read (while sniffing), then reads on.
pub(crate) struct Prefixed<R> {
    prefix: Option<BytesMut>,
    inner: R,
}

impl<R> Prefixed<R> {
    pub(crate) fn new(prefix: BytesMut, inner: R) -> Prefixed<R> {
        Prefixed {
            prefix: (!prefix.is_empty()).then_some(prefix),
            inner,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Prefixed<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(prefix) = self.prefix.as_mut() {
            let n = prefix.len().min(buf.remaining());
            buf.put_slice(&prefix[..n]);
            prefix.advance(n);
            if prefix.is_empty() {
                // Free it: most connections live long after their first frame.
                self.prefix = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// Writes go straight through (a TLS handshake reads the prefix and writes its replies).
impl<R: AsyncWrite + Unpin> AsyncWrite for Prefixed<R> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_the_protocols_apart() {
        assert_eq!(sniff(b"{\"op\":\"ping\"}\n"), Some(Protocol::Native));
        assert_eq!(
            sniff(b"{\"id\":1,\"msgid\":1,\"password\":\"x\"}\0"),
            Some(Protocol::Classic)
        );
        assert_eq!(
            sniff(b"\0 {\"msgid\":4,\"name\":\"a\"}"),
            Some(Protocol::Classic)
        );
        assert_eq!(sniff(b"{\"id\":1,\"msg"), None);
        assert_eq!(sniff(b"   "), None);
        assert_eq!(sniff(b"garbage\n"), Some(Protocol::Native));
        assert_eq!(sniff(b"{bad json}\n"), Some(Protocol::Native));
    }
}
