//! The bench's side of the protocol on its hot paths: a cheap parse of server frames
//! into a small borrowed struct, request frames written straight into a buffer, and the
//! stamp each message text carries (run, stream, sequence, due time).

use std::borrow::Cow;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

/// Rids at or above this are control requests (ack, ping); below it, a rid is the
/// sequence number of the message that request sent.
pub const CONTROL_RID: u64 = 1 << 40;

/// The fields of a server frame the hot paths look at; everything else is skipped.
#[derive(Debug, Deserialize)]
pub struct Frame<'a> {
    /// Set on events.
    #[serde(borrow, default)]
    pub event: Option<Cow<'a, str>>,
    /// The rid of a reply (`null` or absent: none).
    #[serde(default)]
    pub rid: Option<u64>,
    /// Set on replies.
    #[serde(default)]
    pub ok: Option<bool>,
    /// The error of a failed reply.
    #[serde(borrow, default)]
    pub error: Option<ErrorLite<'a>>,
    /// The message id of a `msg` event.
    #[serde(default)]
    pub id: Option<i64>,
    /// The text of a `msg` event.
    #[serde(borrow, default)]
    pub text: Option<Cow<'a, str>>,
    /// The reason of a `kicked` event.
    #[serde(borrow, default)]
    pub reason: Option<Cow<'a, str>>,
}

/// The error object of a failed reply.
#[derive(Debug, Deserialize)]
pub struct ErrorLite<'a> {
    #[serde(borrow)]
    pub code: Cow<'a, str>,
}

impl<'a> Frame<'a> {
    /// Parses one frame; `None` when it is not a JSON object of the expected shape.
    pub fn parse(line: &'a [u8]) -> Option<Frame<'a>> {
        serde_json::from_slice(line).ok()
    }

    /// The error code of a failed reply (`"unknown"` when the server sent none).
    pub fn error_code(&self) -> &str {
        self.error.as_ref().map_or("unknown", |e| e.code.as_ref())
    }
}

/// Nanoseconds since the Unix epoch: a clock every bench process on the machine shares.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What a message text carries so that its receiver can check and time it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Identifies the run, so that messages left pending by an earlier run are told apart.
    pub run: u32,
    /// The sender (a global user index).
    pub sender: u64,
    /// The sender's message counter.
    pub seq: u64,
    /// When the message was due to be sent, in ns since the epoch.
    pub due_ns: u64,
}

impl Stamp {
    /// Writes the stamp as text (`b<run hex>:<sender>:<seq>:<due>`), padded with `.` to
    /// `size` bytes. Only characters that need no JSON escaping.
    pub fn write(&self, out: &mut Vec<u8>, size: usize) {
        let start = out.len();
        let _ = write!(
            out,
            "b{:x}:{}:{}:{}",
            self.run, self.sender, self.seq, self.due_ns
        );
        let len = out.len() - start;
        if len < size {
            out.resize(start + size, b'.');
        }
    }

    /// Reads a stamp back from a message text.
    pub fn parse(text: &str) -> Option<Stamp> {
        let body = text.strip_prefix('b')?;
        let body = body.trim_end_matches('.');
        let mut parts = body.split(':');
        let run = u32::from_str_radix(parts.next()?, 16).ok()?;
        let sender = parts.next()?.parse().ok()?;
        let seq = parts.next()?.parse().ok()?;
        let due_ns = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Stamp {
            run,
            sender,
            seq,
            due_ns,
        })
    }
}

/// The start of a `send` to `to`, up to the rid: `{"op":"send","to":T,"rid":`.
pub fn send_prefix(to: i64) -> Vec<u8> {
    format!(r#"{{"op":"send","to":{to},"rid":"#).into_bytes()
}

/// The start of a `group_send` to `group`, up to the rid.
pub fn group_send_prefix(group: i64) -> Vec<u8> {
    format!(r#"{{"op":"group_send","group":{group},"rid":"#).into_bytes()
}

/// Appends a whole message request: `prefix`, the rid (the sequence number), the stamped
/// text, and the line end.
pub fn push_message(out: &mut Vec<u8>, prefix: &[u8], stamp: &Stamp, size: usize) {
    out.extend_from_slice(prefix);
    let _ = write!(out, "{}", stamp.seq);
    out.extend_from_slice(br#","text":""#);
    stamp.write(out, size);
    out.extend_from_slice(b"\"}\n");
}

/// Appends an `ack` of every message up to `id`.
pub fn push_ack(out: &mut Vec<u8>, rid: u64, id: i64) {
    let _ = writeln!(out, r#"{{"op":"ack","rid":{rid},"id":{id}}}"#);
}

/// Appends a `ping`.
pub fn push_ping(out: &mut Vec<u8>, rid: u64) {
    let _ = writeln!(out, r#"{{"op":"ping","rid":{rid}}}"#);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_with_padding() {
        let stamp = Stamp {
            run: 0xbeef,
            sender: 12,
            seq: 345,
            due_ns: 1_700_000_000_123_456_789,
        };
        let mut text = Vec::new();
        stamp.write(&mut text, 64);
        assert_eq!(text.len(), 64);
        let text = String::from_utf8(text).unwrap();
        assert_eq!(Stamp::parse(&text), Some(stamp));
        assert_eq!(Stamp::parse("hello"), None);
        assert_eq!(Stamp::parse("b1:2:3"), None);
    }

    #[test]
    fn writes_frames_the_protocol_parses() {
        let mut out = Vec::new();
        let stamp = Stamp {
            run: 1,
            sender: 0,
            seq: 7,
            due_ns: 9,
        };
        push_message(&mut out, &send_prefix(42), &stamp, 0);
        push_ack(&mut out, CONTROL_RID + 1, 99);
        push_ping(&mut out, CONTROL_RID + 2);
        push_message(&mut out, &group_send_prefix(5), &stamp, 0);
        let lines: Vec<&[u8]> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 4);
        let parsed: Vec<_> = lines
            .iter()
            .map(|l| chat_proto::request::parse(l).unwrap())
            .collect();
        assert_eq!(parsed[0].0.as_json(), "7");
        assert!(
            matches!(&parsed[0].1, chat_proto::Request::Send(s) if s.to == 42 && s.text == "b1:0:7:9")
        );
        assert!(matches!(parsed[1].1, chat_proto::Request::Ack(a) if a.id == Some(99)));
        assert!(matches!(parsed[2].1, chat_proto::Request::Ping));
        assert!(matches!(&parsed[3].1, chat_proto::Request::GroupSend(g) if g.group == 5));
    }

    #[test]
    fn parses_server_frames_cheaply() {
        let f = Frame::parse(
            br#"{"event":"msg","id":5,"ts":1,"from":2,"from_name":"x","text":"hi","group":3}"#,
        )
        .unwrap();
        assert_eq!(f.event.as_deref(), Some("msg"));
        assert_eq!((f.id, f.text.as_deref()), (Some(5), Some("hi")));
        let f = Frame::parse(br#"{"rid":3,"ok":true,"msg":{"id":5,"ts":1}}"#).unwrap();
        assert_eq!((f.rid, f.ok), (Some(3), Some(true)));
        let f = Frame::parse(
            br#"{"rid":null,"ok":false,"error":{"code":"bad_request","message":"m"}}"#,
        )
        .unwrap();
        assert_eq!((f.rid, f.error_code()), (None, "bad_request"));
        assert!(Frame::parse(b"[1]").is_none());
    }
}
