//! One lean client connection: a TCP stream bound to a chosen loopback source address
//! (with TLS on top when asked), a read buffer split into lines by the protocol's
//! [`LineCodec`], and a write buffer. No task of its own: the scenario's per-connection
//! task drives reads and writes with [`Conn::pump`].
//!
//! Plain TCP keeps the readiness fast path (wait until readable or writable, then
//! `try_read_buf` / `try_write` straight into the buffers); TLS goes through rustls's
//! `AsyncRead` / `AsyncWrite`, which need `&mut` access for both directions, so both
//! directions are driven from the one future.

use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use chat_proto::codec::{FrameError, LineCodec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tokio_util::codec::Decoder;

/// The largest frame the bench accepts: a login reply lists every group with its members,
/// which is large for a member of a big group.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Room made in the read buffer before each read on the hot path.
const READ_CHUNK: usize = 8 * 1024;

/// Where connection `i` goes and comes from: spread over the server addresses and over
/// loopback source addresses 127.0.0.2, 127.0.0.3, ... (each has its own ~28,000
/// ephemeral ports); and whether it speaks TLS.
#[derive(Clone)]
pub struct Endpoints {
    servers: Vec<SocketAddr>,
    sources: Vec<IpAddr>,
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("servers", &self.servers)
            .field("sources", &self.sources)
            .field("tls", &self.tls.is_some())
            .finish()
    }
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
            tls: None,
        })
    }

    /// Speaks TLS to every server, trusting the CA certificate(s) in the PEM file `ca`,
    /// or the system's CAs without one. A server's certificate must name its address's
    /// IP.
    pub fn with_tls(mut self, ca: Option<&Path>) -> anyhow::Result<Endpoints> {
        let connector = chat_client::tls_connector(ca).map_err(|e| anyhow::anyhow!("{e}"))?;
        self.tls = Some(connector);
        Ok(self)
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

    /// Opens connection `i` (see [`Endpoints::pick`]), with the TLS handshake when TLS
    /// is on.
    pub async fn connect(&self, i: u64) -> io::Result<Conn> {
        let (server, source) = self.pick(i);
        Conn::connect(server, source, self.tls.as_ref()).await
    }
}

/// The byte stream under a connection.
enum Stream {
    Plain(TcpStream),
    /// Boxed: a TLS session is large, and a plain connection should not pay for it.
    Tls(Box<TlsStream<TcpStream>>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stream::Plain(s) => f.debug_tuple("Plain").field(s).finish(),
            Stream::Tls(s) => f.debug_tuple("Tls").field(s.get_ref().0).finish(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A connection to the server.
#[derive(Debug)]
pub struct Conn {
    stream: Stream,
    rbuf: BytesMut,
    codec: LineCodec,
    /// Bytes waiting to be written.
    pub wbuf: Vec<u8>,
    /// TLS only: bytes handed to rustls that may not have reached the socket yet.
    unflushed: bool,
}

fn frame_error(e: FrameError) -> io::Error {
    match e {
        FrameError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

fn write_zero() -> io::Error {
    io::Error::new(io::ErrorKind::WriteZero, "the connection took no bytes")
}

impl Conn {
    /// Connects to `server`, from `source` when given; then does the TLS handshake when
    /// `tls` is given, for the server's IP as the certificate's name.
    pub async fn connect(
        server: SocketAddr,
        source: Option<IpAddr>,
        tls: Option<&TlsConnector>,
    ) -> io::Result<Conn> {
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let tcp = socket.connect(server).await?;
        tcp.set_nodelay(true)?;
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some(connector) => {
                let name = ServerName::from(server.ip());
                Stream::Tls(Box::new(connector.connect(name, tcp).await?))
            }
        };
        Ok(Conn {
            stream,
            rbuf: BytesMut::new(),
            codec: LineCodec::new(MAX_FRAME),
            wbuf: Vec::new(),
            unflushed: false,
        })
    }

    /// Writes `bytes` (after anything buffered) and waits until all is written.
    pub async fn write_now(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.wbuf.extend_from_slice(bytes);
        let mut result = self.stream.write_all(&self.wbuf).await;
        if result.is_ok() {
            result = self.stream.flush().await;
        }
        self.wbuf.clear();
        self.unflushed = false;
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

    /// Drives the connection until some bytes have been read: writes what the write
    /// buffer holds whenever the socket takes it, and returns once a read brought
    /// something (`Ok(true)`, lines for [`Conn::decode`]) or found the end of the stream
    /// (`Ok(false)`). Cancel safe: nothing read or written is lost when it is dropped, so
    /// it can be a branch of `select!` that is made anew on every turn.
    pub async fn pump(&mut self) -> io::Result<bool> {
        poll_fn(|cx| self.poll_pump(cx)).await
    }

    fn poll_pump(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        match &mut self.stream {
            Stream::Plain(s) => {
                while !self.wbuf.is_empty() {
                    match s.poll_write_ready(cx) {
                        Poll::Pending => break,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(())) => match s.try_write(&self.wbuf) {
                            Ok(0) => return Poll::Ready(Err(write_zero())),
                            Ok(n) => {
                                self.wbuf.drain(..n);
                            }
                            // Readiness is cleared: polling again registers for the next.
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => return Poll::Ready(Err(e)),
                        },
                    }
                }
                loop {
                    match s.poll_read_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(())) => {
                            self.rbuf.reserve(READ_CHUNK);
                            match s.try_read_buf(&mut self.rbuf) {
                                Ok(n) => return Poll::Ready(Ok(n > 0)),
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                                Err(e) => return Poll::Ready(Err(e)),
                            }
                        }
                    }
                }
            }
            Stream::Tls(s) => {
                let mut s = Pin::new(s.as_mut());
                while !self.wbuf.is_empty() {
                    match s.as_mut().poll_write(cx, &self.wbuf) {
                        Poll::Pending => break,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(0)) => return Poll::Ready(Err(write_zero())),
                        Poll::Ready(Ok(n)) => {
                            self.wbuf.drain(..n);
                            self.unflushed = true;
                        }
                    }
                }
                // rustls may hold encrypted records the socket did not take yet.
                if self.wbuf.is_empty() && self.unflushed {
                    match s.as_mut().poll_flush(cx) {
                        Poll::Pending => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(())) => self.unflushed = false,
                    }
                }
                self.rbuf.reserve(READ_CHUNK);
                match tokio_util::io::poll_read_buf(s, cx, &mut self.rbuf) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Ok(n)) => Poll::Ready(Ok(n > 0)),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                }
            }
        }
    }

    /// Writes as much of the buffer as the socket takes without waiting (plain TCP);
    /// over TLS the next [`Conn::pump`] writes it.
    pub fn flush(&mut self) -> io::Result<()> {
        let Stream::Plain(stream) = &self.stream else {
            return Ok(());
        };
        while !self.wbuf.is_empty() {
            match stream.try_write(&self.wbuf) {
                Ok(0) => return Err(write_zero()),
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
