//! The TCP framing: one JSON object per line, ending in `\n` (a `\r` before it is dropped).
//!
//! The decoder never buffers more than the frame limit: a line that grows past it is an
//! error at once ([`FrameError::TooLarge`]), which the server answers with `too_large`
//! and then closes. Bytes that are not UTF-8 pass through and fail at JSON parsing
//! (`bad_request`), so the connection lives on.

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A line is longer than the limit.
    #[error("frame longer than {limit} bytes")]
    TooLarge { limit: usize },
    /// The connection failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Splits a byte stream into lines of at most `max_len` bytes.
#[derive(Debug, Clone)]
pub struct LineCodec {
    max_len: usize,
    /// How far the buffer has been searched for `\n` already.
    searched: usize,
}

impl LineCodec {
    /// A codec that refuses lines longer than `max_len` bytes (without the line ending).
    pub fn new(max_len: usize) -> LineCodec {
        LineCodec {
            max_len,
            searched: 0,
        }
    }

    /// Changes the limit from the next frame on (a server allows longer frames once a
    /// connection has logged in). Bytes already buffered count against the new limit.
    pub fn set_max_len(&mut self, max_len: usize) {
        self.max_len = max_len;
        // The search must not resume past where the new limit stops it.
        self.searched = self.searched.min(max_len);
    }
}

impl Decoder for LineCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        loop {
            // Search at most one byte past the limit (room for a `\r`).
            let end = buf.len().min(self.max_len + 2);
            match buf[self.searched..end].iter().position(|b| *b == b'\n') {
                Some(offset) => {
                    let at = self.searched + offset;
                    self.searched = 0;
                    let mut line = buf.split_to(at + 1);
                    line.truncate(at);
                    if line.last() == Some(&b'\r') {
                        line.truncate(at - 1);
                    }
                    if line.len() > self.max_len {
                        return Err(FrameError::TooLarge {
                            limit: self.max_len,
                        });
                    }
                    // Blank lines are keep-alives of a kind; skip them.
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Ok(Some(line));
                }
                None if buf.len() > self.max_len + 1 => {
                    buf.advance(buf.len());
                    self.searched = 0;
                    return Err(FrameError::TooLarge {
                        limit: self.max_len,
                    });
                }
                None => {
                    self.searched = end;
                    return Ok(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut LineCodec, input: &[u8]) -> Vec<Result<Vec<u8>, String>> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(line)) => out.push(Ok(line.to_vec())),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    #[test]
    fn a_lowered_limit_applies_to_what_is_buffered() {
        let mut codec = LineCodec::new(100);
        let mut buf = BytesMut::from(&[b'x'; 50][..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        codec.set_max_len(10);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge { limit: 10 })
        ));
        codec.set_max_len(100);
        let mut buf = BytesMut::from(&b"{\"op\":\"ping\"}\n"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_some());
    }

    #[test]
    fn splits_lines_and_drops_cr() {
        let mut codec = LineCodec::new(100);
        let got = decode_all(&mut codec, b"{\"a\":1}\r\n\n{\"b\":2}\n{\"c\"");
        assert_eq!(
            got,
            vec![Ok(b"{\"a\":1}".to_vec()), Ok(b"{\"b\":2}".to_vec())]
        );
    }

    #[test]
    fn finds_a_line_split_across_reads() {
        let mut codec = LineCodec::new(100);
        let mut buf = BytesMut::from(&b"{\"op\":"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"\"ping\"}\n");
        assert_eq!(
            codec.decode(&mut buf).unwrap().unwrap().as_ref(),
            b"{\"op\":\"ping\"}"
        );
    }

    #[test]
    fn refuses_long_lines_without_waiting_for_their_end() {
        let mut codec = LineCodec::new(8);
        let got = decode_all(&mut codec, b"0123456789abcdef");
        assert_eq!(got, vec![Err("frame longer than 8 bytes".into())]);
        let mut codec = LineCodec::new(8);
        assert_eq!(decode_all(&mut codec, b"12345678\r\n").len(), 1);
        assert!(decode_all(&mut codec, b"123456789\n")[0].is_err());
    }
}
