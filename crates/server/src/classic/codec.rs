//! The classic protocol's framing: a byte stream of JSON objects, each usually followed
//! by a NUL byte, but as often by a newline, by nothing, or split across reads.
//!
//! The decoder finds where an object ends by counting braces outside strings, so it does
//! not care how the bytes were cut into reads or what separates the objects. A NUL byte
//! can never be part of JSON text (not even inside a string), so it always ends a frame:
//! a broken object cut short by one becomes a frame of its own (which fails to parse and
//! is dropped) instead of swallowing the requests after it. Bytes that do not start an
//! object run to the next NUL, newline or `{` and are handed on the same way.
//!
//! Nothing past the frame limit is buffered: an object that grows past it is
//! [`FrameError::TooLarge`] at once, as in the native codec.

use bytes::{Buf, BytesMut};
use chat_proto::codec::FrameError;
use tokio_util::codec::Decoder;

/// Splits a byte stream into JSON objects (and stray runs of other bytes) of at most
/// `max_len` bytes.
#[derive(Debug, Clone)]
pub(crate) struct ClassicCodec {
    max_len: usize,
    /// How far the current frame has been scanned, and the scanner's state there.
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl ClassicCodec {
    /// A codec that refuses frames longer than `max_len` bytes.
    pub(crate) fn new(max_len: usize) -> ClassicCodec {
        ClassicCodec {
            max_len,
            scanned: 0,
            depth: 0,
            in_string: false,
            escaped: false,
        }
    }

    /// Changes the limit from the next frame on (longer frames are allowed once a
    /// connection has logged in).
    pub(crate) fn set_max_len(&mut self, max_len: usize) {
        self.max_len = max_len;
    }

    fn reset(&mut self) {
        self.scanned = 0;
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
    }

    /// Where the frame at the start of `buf` ends (exclusive), if it is complete, and
    /// how many bytes after it to drop (a NUL that cut it short).
    fn find_end(&mut self, buf: &[u8]) -> Option<(usize, usize)> {
        if buf[0] != b'{' {
            // A stray run of bytes: up to the next separator or object.
            let at = buf[self.scanned.max(1)..]
                .iter()
                .position(|b| matches!(b, 0 | b'\n' | b'{'))
                .map(|i| i + self.scanned.max(1));
            self.scanned = buf.len();
            return at.map(|at| (at, 0));
        }
        for (i, &b) in buf.iter().enumerate().skip(self.scanned) {
            if b == 0 {
                return Some((i, 1));
            }
            if self.in_string {
                match b {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Some((i + 1, 0));
                    }
                }
                _ => {}
            }
        }
        self.scanned = buf.len();
        None
    }
}

impl Decoder for ClassicCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        if self.scanned == 0 {
            // Separators between frames: NUL bytes and whitespace.
            let skip = buf
                .iter()
                .position(|b| *b != 0 && !b.is_ascii_whitespace())
                .unwrap_or(buf.len());
            buf.advance(skip);
            if buf.is_empty() {
                return Ok(None);
            }
        }
        let Some((end, drop)) = self.find_end(buf) else {
            if buf.len() > self.max_len {
                buf.advance(buf.len());
                self.reset();
                return Err(FrameError::TooLarge {
                    limit: self.max_len,
                });
            }
            return Ok(None);
        };
        self.reset();
        if end > self.max_len {
            buf.advance(buf.len());
            return Err(FrameError::TooLarge {
                limit: self.max_len,
            });
        }
        let frame = buf.split_to(end);
        buf.advance(drop);
        Ok(Some(frame))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None => {
                // The peer closed in the middle of an object: it was never a request.
                if !buf.is_empty() {
                    tracing::debug!(bytes = buf.len(), "classic: incomplete request at close");
                    buf.clear();
                }
                self.reset();
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` one read at a time; returns the frames (as text) and any error.
    fn frames(max: usize, chunks: &[&[u8]]) -> Vec<Result<String, String>> {
        let mut codec = ClassicCodec::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(f)) => out.push(Ok(String::from_utf8_lossy(&f).into_owned())),
                    Ok(None) => break,
                    Err(e) => {
                        out.push(Err(e.to_string()));
                        return out;
                    }
                }
            }
        }
        if let Ok(Some(f)) = codec.decode_eof(&mut buf) {
            out.push(Ok(String::from_utf8_lossy(&f).into_owned()));
        }
        out
    }

    fn ok(list: &[&str]) -> Vec<Result<String, String>> {
        list.iter().map(|s| Ok(s.to_string())).collect()
    }

    #[test]
    fn splits_objects_whatever_separates_them() {
        let got = frames(
            100,
            &[b"{\"a\":1}\0{\"b\":2}\n\0 {\"c\":3}{\"d\":{\"e\":[1,{}]}}\r\n"],
        );
        assert_eq!(
            got,
            ok(&[
                "{\"a\":1}",
                "{\"b\":2}",
                "{\"c\":3}",
                "{\"d\":{\"e\":[1,{}]}}"
            ])
        );
    }

    #[test]
    fn finds_objects_split_across_reads() {
        let got = frames(
            100,
            &[b"{\"msg\":\"a}", b"{\\\"\"", b",\"x\":1", b"}\0{", b"}"],
        );
        assert_eq!(got, ok(&["{\"msg\":\"a}{\\\"\",\"x\":1}", "{}"]));
    }

    #[test]
    fn a_nul_ends_a_broken_object_and_garbage_is_its_own_frame() {
        let got = frames(100, &[b"{\"a\":[1\0{\"b\":2}\0junk\n[1,2]\0x{\"c\":3}"]);
        assert_eq!(
            got,
            ok(&["{\"a\":[1", "{\"b\":2}", "junk", "[1,2]", "x", "{\"c\":3}"])
        );
    }

    #[test]
    fn refuses_long_objects_without_waiting_for_their_end() {
        assert_eq!(
            frames(8, &[b"{\"a\":\"", b"0123456789"]),
            vec![Err("frame longer than 8 bytes".to_string())]
        );
        assert_eq!(
            frames(8, &[b"{\"a\":\"1\"}"]),
            vec![Err("frame longer than 8 bytes".to_string())]
        );
        assert_eq!(frames(8, &[b"{\"a\":12}"]), ok(&["{\"a\":12}"]));
        // Separators do not count.
        assert_eq!(frames(8, &[b"\0\0\0\0\0\0\0\0\0{}\0"]), ok(&["{}"]));
    }
}
