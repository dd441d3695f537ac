//! An async client for chatd's JSON-lines protocol, used by the `chat` terminal client,
//! `chat-bench` and the tests.
//!
//! [`Client::connect`] returns a [`Client`], which sends requests and waits for the reply
//! with the same rid, and an [`Events`] stream of what the server pushes. A reader task
//! routes frames; a writer task batches outgoing frames into few writes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chat_proto::codec::LineCodec;
use chat_proto::incoming::{Incoming, ReplyFrame};
use chat_proto::reply::{ConversationsReply, LoginReply, MsgReply, ReadReply, UserReply};
use chat_proto::request::{self, Request};
use chat_proto::{ErrorBody, Event};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

/// The largest frame the client accepts from the server.
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Why a request got no successful reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{}: {}", .0.code, .0.message)]
    Server(ErrorBody),
    /// The connection closed before the reply came.
    #[error("connection closed")]
    Closed,
    /// The reply did not have the expected fields.
    #[error("unexpected reply: {0}")]
    Decode(#[from] serde_json::Error),
    /// Connecting failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// TLS could not be set up (certificates, server name).
    #[error("TLS: {0}")]
    Tls(String),
}

/// A TLS connector trusting the CA certificates in `ca` (PEM), or the system's.
pub fn tls_connector(
    ca: Option<&std::path::Path>,
) -> Result<tokio_rustls::TlsConnector, ClientError> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| ClientError::Tls(format!("--ca {}: {e}", path.display())))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| ClientError::Tls(format!("--ca {}: {e}", path.display())))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let config = ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ClientError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

impl ClientError {
    /// The server's error code, if the server refused the request.
    pub fn code(&self) -> Option<chat_proto::ErrorCode> {
        match self {
            ClientError::Server(body) => Some(body.code),
            _ => None,
        }
    }
}

type Waiters = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<ReplyFrame>>>>>;

/// The sending half of a connection. Cheap to clone; requests may be in flight at once.
#[derive(Clone)]
pub struct Client {
    out: mpsc::Sender<Vec<u8>>,
    waiters: Waiters,
    next_rid: Arc<AtomicU64>,
}

/// Events pushed by the server, in the order they arrived. Ends when the connection closes.
pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    /// The next event, or `None` once the connection has closed.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one has arrived already.
    pub fn try_next(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

impl Client {
    /// Connects over TCP.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<(Client, Events), ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(Client::over(read, write))
    }

    /// Connects over TCP and TLS. The server's certificate must be for `server_name` and
    /// signed by the CA certificate(s) in the PEM file `ca`, or, without one, by a CA the
    /// system trusts.
    pub async fn connect_tls(
        addr: impl ToSocketAddrs,
        server_name: &str,
        ca: Option<&std::path::Path>,
    ) -> Result<(Client, Events), ClientError> {
        let connector = tls_connector(ca)?;
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| ClientError::Tls(format!("server name {server_name}: {e}")))?;
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let stream = connector.connect(name, stream).await?;
        let (read, write) = tokio::io::split(stream);
        Ok(Client::over(read, write))
    }

    /// Runs the protocol over any byte stream halves (TCP, TLS, a test pipe).
    pub fn over<R, W>(read: R, write: W) -> (Client, Events)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let waiters: Waiters = Arc::new(Mutex::new(Some(HashMap::new())));
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = mpsc::channel(1024);
        tokio::spawn(read_frames(read, waiters.clone(), event_tx));
        tokio::spawn(write_frames(write, out_rx));
        let client = Client {
            out: out_tx,
            waiters,
            next_rid: Arc::new(AtomicU64::new(1)),
        };
        (client, Events { rx: event_rx })
    }

    /// Sends a request and waits for its reply, successful or not.
    pub async fn request(&self, req: &Request) -> Result<ReplyFrame, ClientError> {
        let rid = self.next_rid.fetch_add(1, Ordering::Relaxed);
        let mut frame = req.to_json(rid).into_bytes();
        frame.push(b'\n');
        self.request_raw(rid, frame).await
    }

    /// Sends a frame the caller wrote, whose rid is `rid`, and waits for the reply.
    pub async fn request_raw(&self, rid: u64, frame: Vec<u8>) -> Result<ReplyFrame, ClientError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut guard = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            let Some(waiters) = guard.as_mut() else {
                return Err(ClientError::Closed);
            };
            waiters.insert(rid, tx);
        }
        if self.out.send(frame).await.is_err() {
            return Err(ClientError::Closed);
        }
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// A fresh rid for [`Client::request_raw`].
    pub fn next_rid(&self) -> u64 {
        self.next_rid.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends bytes as they are, expecting no reply (for tests of malformed input).
    pub async fn send_raw(&self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.out.send(bytes).await.map_err(|_| ClientError::Closed)
    }

    /// Sends a request and decodes the body of a successful reply.
    pub async fn call<T: DeserializeOwned>(&self, req: &Request) -> Result<T, ClientError> {
        let reply = self.request(req).await?;
        match reply.error {
            Some(error) if !reply.ok => Err(ClientError::Server(error)),
            _ => Ok(reply.body()?),
        }
    }

    /// Sends a request whose successful reply has no fields of interest.
    pub async fn call_ok(&self, req: &Request) -> Result<(), ClientError> {
        self.call::<serde_json::Value>(req).await.map(|_| ())
    }

    /// Registers a user.
    pub async fn register(&self, name: &str, password: &str) -> Result<UserReply, ClientError> {
        self.call(&Request::Register(request::Register {
            name: name.into(),
            password: password.into(),
        }))
        .await
    }

    /// Logs in by name and password.
    pub async fn login_name(&self, name: &str, password: &str) -> Result<LoginReply, ClientError> {
        self.call(&Request::Login(request::Login {
            name: Some(name.into()),
            password: Some(password.into()),
            ..Default::default()
        }))
        .await
    }

    /// Logs in by id and password.
    pub async fn login_id(&self, id: i64, password: &str) -> Result<LoginReply, ClientError> {
        self.call(&Request::Login(request::Login {
            id: Some(id),
            password: Some(password.into()),
            ..Default::default()
        }))
        .await
    }

    /// Resumes with a token from an earlier login.
    pub async fn login_token(&self, token: &str) -> Result<LoginReply, ClientError> {
        self.call(&Request::Login(request::Login {
            token: Some(token.into()),
            ..Default::default()
        }))
        .await
    }

    /// Sends a one-to-one message.
    pub async fn send(&self, to: i64, text: &str) -> Result<MsgReply, ClientError> {
        self.send_cmid(to, text, None).await
    }

    /// Sends a one-to-one message with a client message id: sending it again with the
    /// same `cmid` (after a lost connection, say) cannot make a second message.
    pub async fn send_cmid(
        &self,
        to: i64,
        text: &str,
        cmid: Option<&str>,
    ) -> Result<MsgReply, ClientError> {
        self.call(&Request::Send(request::Send {
            to,
            text: text.into(),
            cmid: cmid.map(str::to_string),
        }))
        .await
    }

    /// Sends a group message.
    pub async fn group_send(&self, group: i64, text: &str) -> Result<MsgReply, ClientError> {
        self.group_send_cmid(group, text, None).await
    }

    /// Sends a group message with a client message id (see [`Client::send_cmid`]).
    pub async fn group_send_cmid(
        &self,
        group: i64,
        text: &str,
        cmid: Option<&str>,
    ) -> Result<MsgReply, ClientError> {
        self.call(&Request::GroupSend(request::GroupSend {
            group,
            text: text.into(),
            cmid: cmid.map(str::to_string),
        }))
        .await
    }

    /// Acknowledges every message received with an id up to `id`.
    pub async fn ack(&self, id: i64) -> Result<(), ClientError> {
        self.call_ok(&Request::Ack(request::Ack {
            id: Some(id),
            ..request::Ack::default()
        }))
        .await
    }

    /// Marks conversation `conv` read up to `seq` (the other side gets a read receipt).
    pub async fn read(&self, conv: i64, seq: i64) -> Result<ReadReply, ClientError> {
        self.call(&Request::Read(request::Read { conv, seq })).await
    }

    /// Tells the other members of `conv` that the user is typing.
    pub async fn typing(&self, conv: i64) -> Result<(), ClientError> {
        self.call_ok(&Request::Typing(request::Typing { conv }))
            .await
    }

    /// A page of the user's conversations, most recent first.
    pub async fn conversations(
        &self,
        before: Option<i64>,
        limit: Option<i64>,
    ) -> Result<ConversationsReply, ClientError> {
        self.call(&Request::Conversations(request::Conversations {
            before,
            limit,
        }))
        .await
    }

    /// Closes the sending side; the server sees end of input.
    pub async fn close(self) {
        drop(self.out);
    }
}

async fn read_frames<R>(read: R, waiters: Waiters, events: mpsc::UnboundedSender<Event>)
where
    R: AsyncRead + Unpin,
{
    let mut frames = FramedRead::new(read, LineCodec::new(MAX_FRAME));
    while let Some(Ok(frame)) = frames.next().await {
        match Incoming::parse(&frame) {
            Ok(Incoming::Event(event)) => {
                let _ = events.send(event);
            }
            Ok(Incoming::Reply(reply)) => {
                let waiter = reply.rid.as_u64().and_then(|rid| {
                    let mut guard = waiters.lock().unwrap_or_else(|e| e.into_inner());
                    guard.as_mut().and_then(|w| w.remove(&rid))
                });
                if let Some(waiter) = waiter {
                    let _ = waiter.send(reply);
                }
            }
            Err(_) => {}
        }
    }
    // Fail every request still waiting, and refuse new ones.
    waiters.lock().unwrap_or_else(|e| e.into_inner()).take();
}

async fn write_frames<W>(mut write: W, mut out: mpsc::Receiver<Vec<u8>>)
where
    W: AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(4096);
    while let Some(frame) = out.recv().await {
        buf.extend_from_slice(&frame);
        while buf.len() < 64 * 1024 {
            match out.try_recv() {
                Ok(frame) => buf.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        if write.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
    }
    let _ = write.shutdown().await;
}
