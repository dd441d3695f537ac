//! A connection from `accept` to its session loop: who it is from, whether it may stay,
//! and which protocol it speaks.
//!
//! A connection that has not logged in has proved nothing, so everything it can make
//! the server hold is bounded here: the PROXY protocol header (when the peer is a
//! trusted balancer) has a size and a time limit ([`crate::proxy`]); the client's
//! address may hold at most `--max-connections-per-address` connections (past it:
//! `kicked` `too_many_connections`); the TLS handshake and the protocol sniffing run
//! under the login deadline; and until login a frame may be at most
//! `--max-frame-before-login` bytes (the session raises it to `--max-frame` at login and
//! lowers it again at logout, through [`FrameSource`]).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::BytesMut;
use chat_proto::codec::{FrameError, LineCodec};
use chat_proto::event::kick_reason;
use chat_proto::Event;
use futures::future::Either;
use futures::{FutureExt, Stream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::classic::{ClassicCodec, ClassicDialect};
use crate::dialect::{sniff, Native, Prefixed, Protocol};
use crate::hub::Frame;
use crate::limits::AddressSlot;
use crate::session::Session;
use crate::state::Ctx;

/// What the session knows of how its connection was accepted.
pub(crate) struct Accepted {
    pub(crate) conn_id: u64,
    /// The client's address (from the PROXY protocol header behind a balancer), for the
    /// per-address limits on registering and logging in.
    pub(crate) peer: IpAddr,
    /// When the connection is closed unless it has logged in.
    pub(crate) login_deadline: Instant,
    /// Its place under `--max-connections`, given back when the session ends.
    pub(crate) slot: OwnedSemaphorePermit,
    /// Its place under `--max-connections-per-address`.
    pub(crate) address_slot: AddressSlot,
}

/// A stream of inbound frames whose size limit the session can change.
pub(crate) trait FrameSource: Stream<Item = Result<BytesMut, FrameError>> + Unpin {
    /// The largest frame accepted from the next one on.
    fn set_max_frame(&mut self, max: usize);
}

impl<R: AsyncRead + Unpin> FrameSource for FramedRead<R, LineCodec> {
    fn set_max_frame(&mut self, max: usize) {
        self.decoder_mut().set_max_len(max);
    }
}

impl<R: AsyncRead + Unpin> FrameSource for FramedRead<R, ClassicCodec> {
    fn set_max_frame(&mut self, max: usize) {
        self.decoder_mut().set_max_len(max);
    }
}

impl<T: FrameSource + ?Sized> FrameSource for &mut T {
    fn set_max_frame(&mut self, max: usize) {
        (**self).set_max_frame(max);
    }
}

/// Serves one TCP connection (in TLS when the server has a certificate) until it
/// closes, is kicked, or the server shuts down.
///
/// Not an `async fn`, nor an `async` block: either would keep its arguments and locals
/// beside the session's future for the connection's whole life. The PROXY protocol
/// header (only from a trusted balancer: boxed, it runs once) is followed by the session
/// through `then`, which lays out one or the other, never both; a direct connection
/// allocates nothing for it (freed memory between long-lived allocations of every
/// connection would stay as holes).
pub(crate) fn serve_tcp(
    ctx: Arc<Ctx>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
    slot: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send {
    let _ = stream.set_nodelay(true);
    // The connection counts as open until its future ends.
    let open = ctx
        .metrics
        .connection(if tls.is_some() { "tls" } else { "tcp" });
    let conn_id = ctx.hub.next_conn_id();
    // A lean span (it is kept per connection): the peer is logged once, at admission.
    let span = tracing::info_span!("conn", id = conn_id, user = tracing::field::Empty);
    let login_deadline = Instant::now() + ctx.config.login_timeout;
    let trusted = (ctx.config.proxy_protocol.as_ref()).is_some_and(|t| t.trusts(peer.ip()));
    let arrival = if trusted {
        Either::Left(Box::pin(proxy_header(stream, peer, login_deadline)))
    } else {
        Either::Right(std::future::ready(Some(Arrival {
            stream,
            client: peer.ip(),
            first: BytesMut::new(),
        })))
    };
    arrival
        .then(move |arrival| {
            let Some(arrival) = arrival else {
                return Either::Right(Either::Right(std::future::ready(())));
            };
            tracing::debug!(%peer, client = %arrival.client, "connected");
            let Some(address_slot) = ctx.address_slots.take(arrival.client) else {
                tracing::info!(client = %arrival.client, "too many connections from one address");
                let refusal = refuse(arrival.stream, kick_reason::TOO_MANY_CONNECTIONS);
                return Either::Right(Either::Left(Box::pin(refusal)));
            };
            let accepted = Accepted {
                conn_id,
                peer: arrival.client,
                login_deadline,
                slot,
                address_slot,
            };
            Either::Left(match tls {
                None => {
                    let (read, write) = arrival.stream.into_split();
                    Either::Left(serve_stream(
                        ctx,
                        read,
                        write,
                        accepted,
                        arrival.first,
                        shutdown,
                    ))
                }
                // Boxed: a future is as large as its largest branch, and a TLS handshake
                // in flight is large; plain connections must not carry its size for
                // their life.
                Some(acceptor) => {
                    let stream = Prefixed::new(arrival.first, arrival.stream);
                    Either::Right(Box::pin(serve_tls(
                        ctx, stream, acceptor, accepted, shutdown,
                    )))
                }
            })
        })
        .map(move |()| drop(open))
        .instrument(span)
}

/// Serves a version-1 session over another transport (WebSocket): `frames` are its
/// requests, one per item, and `writer` takes JSON lines.
pub(crate) async fn serve_frames<S, W>(
    ctx: Arc<Ctx>,
    frames: S,
    writer: W,
    peer: IpAddr,
    slots: (OwnedSemaphorePermit, AddressSlot),
    shutdown: CancellationToken,
) where
    S: FrameSource,
    W: AsyncWrite + Unpin,
{
    let conn_id = ctx.hub.next_conn_id();
    let span = tracing::info_span!("ws", id = conn_id, user = tracing::field::Empty);
    tracing::debug!(parent: &span, %peer, "connected");
    let accepted = Accepted {
        conn_id,
        peer,
        login_deadline: Instant::now() + ctx.config.login_timeout,
        slot: slots.0,
        address_slot: slots.1,
    };
    let mut session = Session::new(ctx, accepted, writer, Native);
    session.run(frames, shutdown).instrument(span).await;
}

/// A connection and who it is from.
struct Arrival {
    stream: TcpStream,
    /// The client's address: the connection's own, or the one a trusted balancer's
    /// PROXY protocol header names.
    client: IpAddr,
    /// Bytes read with the header: the start of the client's stream.
    first: BytesMut,
}

/// Reads the PROXY protocol header a trusted balancer starts a connection with (within
/// [`crate::proxy::HEADER_TIMEOUT`] and the login deadline). `None`: there was no valid
/// header in time, and the connection is closed.
async fn proxy_header(
    mut stream: TcpStream,
    peer: SocketAddr,
    login_deadline: Instant,
) -> Option<Arrival> {
    let by = login_deadline.min(Instant::now() + crate::proxy::HEADER_TIMEOUT);
    match tokio::time::timeout_at(by, crate::proxy::read_header(&mut stream)).await {
        Ok(Ok((header, first))) => Some(Arrival {
            client: header.source.map_or(peer.ip(), |source| source.ip()),
            stream,
            first,
        }),
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "closing a connection from a trusted proxy");
            None
        }
        Err(_) => {
            tracing::info!(%peer, "no PROXY protocol header in time; closing");
            None
        }
    }
}

/// Serves a connection in TLS: the handshake (within the login deadline), then the stream.
async fn serve_tls<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: Arc<Ctx>,
    stream: S,
    acceptor: tokio_rustls::TlsAcceptor,
    accepted: Accepted,
    shutdown: CancellationToken,
) {
    match tokio::time::timeout_at(accepted.login_deadline, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let (read, write) = tokio::io::split(stream);
            serve_stream(ctx, read, write, accepted, BytesMut::new(), shutdown).await;
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!("TLS handshake timed out"),
    }
}

/// Serves one connection's byte stream, whatever carries it (`first`: bytes read from it
/// already): tells the protocol from the first frame, then runs the session loop with
/// that protocol's codec and dialect.
async fn serve_stream<R, W>(
    ctx: Arc<Ctx>,
    mut read: R,
    write: W,
    accepted: Accepted,
    mut first: BytesMut,
    shutdown: CancellationToken,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let max_frame = ctx.config.frame_limit(false);
    first.reserve(256);
    // Boxed: the sniffing (a read and a timer) lasts one frame; inline, its state would be
    // laid out beside the session loop for the connection's whole life.
    let sniffed = Box::pin(tokio::time::timeout_at(
        accepted.login_deadline,
        sniff_stream(&mut read, &mut first, max_frame),
    ))
    .await;
    // A connection that says nothing in time is a native one past its login deadline.
    let protocol = sniffed.unwrap_or(Protocol::Native);
    let read = Prefixed::new(first, read);
    match protocol {
        Protocol::Native => {
            let mut frames = FramedRead::with_capacity(read, LineCodec::new(max_frame), 256);
            let mut session = Session::new(ctx, accepted, write, Native);
            // By reference: an async fn keeps its arguments beside the locals they move
            // into, so a session passed by value would be laid out twice.
            session.run(&mut frames, shutdown).await;
        }
        Protocol::Classic => {
            tracing::debug!("classic protocol");
            let mut frames = FramedRead::with_capacity(read, ClassicCodec::new(max_frame), 256);
            let mut session = Session::new(ctx, accepted, write, ClassicDialect::new());
            // Boxed, as the TLS path is: its dialect's state would otherwise widen every
            // native session's future.
            Box::pin(session.run(&mut frames, shutdown)).await;
        }
    }
}

/// Tells a connection that it is not served (`server_full` past `--max-connections`,
/// `too_many_connections` past the per-address cap), and closes it. The line is plain
/// JSON even on a TLS listener: no handshake is spent on a connection that is refused.
pub(crate) async fn refuse(mut stream: TcpStream, reason: &'static str) {
    let frame = Frame::event(&Event::Kicked {
        reason: reason.to_string(),
        message: None,
    });
    let _ = tokio::time::timeout(REFUSAL_WRITE, stream.write_all(&frame.bytes)).await;
    let _ = stream.shutdown().await;
}

/// How long a refusal line may take to write.
const REFUSAL_WRITE: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads until the first frame tells the protocol (or the connection ends, or the bytes
/// pass the frame limit: then it is native, and the native codec answers).
async fn sniff_stream<R: AsyncRead + Unpin>(
    read: &mut R,
    first: &mut BytesMut,
    max_frame: usize,
) -> Protocol {
    loop {
        if let Some(protocol) = sniff(first) {
            return protocol;
        }
        if first.len() > max_frame {
            return Protocol::Native;
        }
        match read.read_buf(first).await {
            Ok(0) | Err(_) => return Protocol::Native,
            Ok(_) => {}
        }
    }
}
