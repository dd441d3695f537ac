//! One lean client connection: a TCP stream bound to a chosen loopback source address,
//! a read buffer split into lines by the protocol's [`LineCodec`], and a write buffer.
//! No task of its own: the scenario's per-connection task drives reads and writes.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::BytesMut;
use chat_proto::codec::{FrameError, LineCodec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::codec::Decoder;

/// The largest frame the bench accepts: a login reply lists every group with its members,
/// which is large for a member of a big group.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Where connection `i` goes and comes from: spread over the server addresses and over
/// loopback source addresses 127.0.0.2, 127.0.0.3, ... (each has its own ~28,000
/// ephemeral ports).
#[derive(Debug, Clone)]
pub struct Endpoints {
    servers: Vec<SocketAddr>,
    sources: Vec<IpAddr>,
}

impl Endpoints {
    /// Checks that every server is on 127.0.0.0/8 (the bench sends nothing elsewhere) and
    /// lays out `sources` source addresses (0: let the kernel choose).
    pub fn new(servers: &[SocketAddr], sources: u32) -> anyhow::Result<Endpoints> {
        anyhow::ensure!(!servers.is_empty(), "no server address given (--addr)");
        for addr in servers {
            match addr.ip() {
                IpAddr::V4(ip) if ip.is_loopback() => {}
                _ => anyhow::bail!(
                    "{addr} is not on 127.0.0.0/8: chat-bench only drives servers on loopback"
                ),
            }
        }
        let base = u32::from(Ipv4Addr::new(127, 0, 0, 2));
        let sources = (0..sources.min(1 << 20))
            .map(|k| IpAddr::V4(Ipv4Addr::from(base + k)))
            .collect();
        Ok(Endpoints {
            servers: servers.to_vec(),
            sources,
        })
    }

    /// The server and source address of connection `i`.
    pub fn pick(&self, i: u64) -> (SocketAddr, Option<IpAddr>) {
        let n = self.servers.len() as u64;
        let server = self.servers[(i % n) as usize];
        let source = if self.sources.is_empty() {
            None
        } else {
            let k = (i / n) % self.sources.len() as u64;
            Some(self.sources[k as usize])
        };
        (server, source)
    }
}

/// A connection to the server.
#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    rbuf: BytesMut,
    codec: LineCodec,
    /// Bytes waiting to be written.
    pub wbuf: Vec<u8>,
}

fn frame_error(e: FrameError) -> io::Error {
    match e {
        FrameError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

impl Conn {
    /// Connects to `server`, from `source` when given.
    pub async fn connect(server: SocketAddr, source: Option<IpAddr>) -> io::Result<Conn> {
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(server).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            rbuf: BytesMut::new(),
            codec: LineCodec::new(MAX_FRAME),
            wbuf: Vec::new(),
        })
    }

    /// Writes `bytes` (after anything buffered) and waits until all is written.
    pub async fn write_now(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.wbuf.extend_from_slice(bytes);
        let result = self.stream.write_all(&self.wbuf).await;
        self.wbuf.clear();
        result
    }

    /// The next line from the server, waiting for it; `None` at end of stream.
    pub async fn next_line(&mut self) -> io::Result<Option<BytesMut>> {
        loop {
            if let Some(line) = self.decode()? {
                return Ok(Some(line));
            }
            self.rbuf.reserve(16 * 1024);
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// A whole line already read, if any.
    pub fn decode(&mut self) -> io::Result<Option<BytesMut>> {
        self.codec.decode(&mut self.rbuf).map_err(frame_error)
    }

    /// Reads what the socket has without waiting; `Ok(false)` at end of stream. Call
    /// after `stream.readable()`.
    pub fn fill(&mut self) -> io::Result<bool> {
        self.rbuf.reserve(8 * 1024);
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Writes as much of the buffer as the socket takes without waiting.
    pub fn flush(&mut self) -> io::Result<()> {
        while !self.wbuf.is_empty() {
            match self.stream.try_write(&self.wbuf) {
                Ok(n) => {
                    self.wbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Drops the read buffer's spare room (after a large login reply).
    pub fn shrink(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 16 * 1024 {
            self.rbuf = BytesMut::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_connections_over_servers_and_sources() {
        let servers: Vec<SocketAddr> = vec![
            "127.0.0.1:6000".parse().unwrap(),
            "127.0.0.1:6001".parse().unwrap(),
        ];
        let ends = Endpoints::new(&servers, 3).unwrap();
        let picks: Vec<_> = (0..6).map(|i| ends.pick(i)).collect();
        assert_eq!(picks[0].0.port(), 6000);
        assert_eq!(picks[1].0.port(), 6001);
        assert_eq!(picks[0].1, Some("127.0.0.2".parse().unwrap()));
        assert_eq!(picks[2].1, Some("127.0.0.3".parse().unwrap()));
        assert_eq!(picks[4].1, Some("127.0.0.4".parse().unwrap()));
        assert!(Endpoints::new(&["10.0.0.1:6000".parse().unwrap()], 1).is_err());
        assert_eq!(Endpoints::new(&servers, 0).unwrap().pick(5).1, None);
    }
}
