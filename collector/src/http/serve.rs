//! The HTTP listener: axum's router on hyper, with the limits a server on a
//! network needs and `axum::serve` does not set.
//!
//! - **Header-read timeout.** A connection must send a request's headers
//!   within [`HEADER_READ_TIMEOUT`] of starting to, and an idle keep-alive
//!   connection must start its next request within it, or it is closed: a
//!   client that opens connections and never finishes a request cannot
//!   hold them.
//! - **A cap on connections.** At most [`MAX_CONNECTIONS`] are served at
//!   once; past it the listener stops accepting, so further connections
//!   wait in the kernel's backlog instead of taking file descriptors the
//!   agents' gRPC listener needs.
//! - **HTTP/2 keep-alive pings**, so a peer that vanished is noticed.
//! - **TLS** when configured (see [`crate::tls`]): then plain HTTP and h2c
//!   are not served.
//!
//! The agents' gRPC listener gets the same cap (`max_agent_connections`)
//! from the same [`CappedListener`], and closes connections that send
//! nothing ([`agent_incoming`]).

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// How long a connection may take to send a request's headers, or stay idle
/// between requests.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 1_024;
/// How often an HTTP/2 connection is pinged, and how long the answer may
/// take.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// How often, at most, reaching the connection cap is logged.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(60);

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an agent's connection may take to send its first bytes (plain)
/// or finish its TLS handshake; one that does not is closed.
pub const AGENT_HANDSHAKE_TIMEOUT: Duration = HANDSHAKE_TIMEOUT;

/// An agent's connection: plain TCP or TLS, holding its place under the
/// connection cap until it closes.
pub(crate) struct AgentConnection {
    io: AgentIo,
    local_addr: Option<std::net::SocketAddr>,
    remote_addr: Option<std::net::SocketAddr>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

enum AgentIo {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

impl tokio::io::AsyncRead for AgentConnection {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            AgentIo::Plain(io) => std::pin::Pin::new(io).poll_read(cx, buf),
            AgentIo::Tls(io) => std::pin::Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for AgentConnection {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match &mut self.get_mut().io {
            AgentIo::Plain(io) => std::pin::Pin::new(io).poll_write(cx, buf),
            AgentIo::Tls(io) => std::pin::Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match &mut self.get_mut().io {
            AgentIo::Plain(io) => std::pin::Pin::new(io).poll_write_vectored(cx, bufs),
            AgentIo::Tls(io) => std::pin::Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            AgentIo::Plain(io) => io.is_write_vectored(),
            AgentIo::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            AgentIo::Plain(io) => std::pin::Pin::new(io).poll_flush(cx),
            AgentIo::Tls(io) => std::pin::Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            AgentIo::Plain(io) => std::pin::Pin::new(io).poll_shutdown(cx),
            AgentIo::Tls(io) => std::pin::Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for AgentConnection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: self.local_addr,
            remote_addr: self.remote_addr,
        }
    }
}

/// A listener that serves at most `limit` connections at once: past it, it
/// stops accepting, so further connections wait in the kernel's backlog
/// instead of taking file descriptors the other listener needs. Reaching
/// the cap is logged at most once a minute, so a server that runs at its
/// limit does not fill the log.
struct CappedListener {
    listener: TcpListener,
    connections: std::sync::Arc<Semaphore>,
    limit: usize,
    /// Whose connections, for the log: `HTTP`, `agent`.
    what: &'static str,
    warned_full: Option<tokio::time::Instant>,
}

impl CappedListener {
    fn new(listener: TcpListener, limit: usize, what: &'static str) -> CappedListener {
        CappedListener {
            listener,
            connections: std::sync::Arc::new(Semaphore::new(limit)),
            limit,
            what,
            warned_full: None,
        }
    }

    /// The next connection, with TCP_NODELAY set (responses and
    /// acknowledgements are small frames: sent at once, not held back for
    /// the peer's delayed ACK), and its place under the cap, given back when
    /// dropped; `None` once `shutdown` turns true.
    async fn accept(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<(tokio::net::TcpStream, tokio::sync::OwnedSemaphorePermit)> {
        loop {
            let permit = tokio::select! {
                permit = self.connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                _ = shutdown.wait_for(|stop| *stop) => return None,
            };
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = shutdown.wait_for(|stop| *stop) => return None,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, most likely: wait for some to
                    // be given back rather than spin.
                    tracing::warn!(%error, "{} accept failed", self.what);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if self.connections.available_permits() == 0
                && self.warned_full.is_none_or(|at| at.elapsed() >= FULL_WARNING_EVERY)
            {
                tracing::warn!(
                    limit = self.limit,
                    "{} connections at their limit; new ones wait",
                    self.what
                );
                self.warned_full = Some(tokio::time::Instant::now());
            }
            let _ = stream.set_nodelay(true);
            return Some((stream, permit));
        }
    }
}

/// The agents' connections to `listener`, for the gRPC server: at most
/// `limit` at once (past it the listener stops accepting, so further ones
/// wait in the kernel's backlog instead of taking the file descriptors the
/// HTTP listener needs), each handed over once it has sent its first bytes
/// or, with `tls`, finished its handshake, within
/// [`AGENT_HANDSHAKE_TIMEOUT`]; one that does not is closed. Handshakes run
/// side by side, so a slow client holds up no other.
pub(crate) fn agent_incoming(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limit: usize,
    mut shutdown: watch::Receiver<bool>,
) -> tokio_stream::wrappers::ReceiverStream<Result<AgentConnection, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut listener = CappedListener::new(listener, limit, "agent");
    tokio::spawn(async move {
        while let Some((stream, permit)) = listener.accept(&mut shutdown).await {
            if tx.is_closed() {
                break;
            }
            let (tx, tls) = (tx.clone(), tls.clone());
            tokio::spawn(async move {
                let (local_addr, remote_addr) = (stream.local_addr().ok(), stream.peer_addr().ok());
                let io = match tls {
                    // Waits for bytes to read, not mere readiness.
                    None => match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut [0u8; 1])).await {
                        Ok(Ok(_)) => AgentIo::Plain(stream),
                        Ok(Err(error)) => return tracing::debug!(%error, "agent connection failed"),
                        Err(_) => return tracing::debug!("agent connection sent nothing; closed"),
                    },
                    Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => AgentIo::Tls(Box::new(tls)),
                        Ok(Err(error)) => return tracing::debug!(%error, "agent TLS handshake failed"),
                        Err(_) => return tracing::debug!("agent TLS handshake timed out"),
                    },
                };
                let _ = tx
                    .send(Ok(AgentConnection {
                        io,
                        local_addr,
                        remote_addr,
                        _permit: permit,
                    }))
                    .await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Serves `app` on `listener` (over TLS when `tls` is set: then plain HTTP
/// is not served) until `shutdown` turns true, then lets the requests in
/// progress finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE)
        .keep_alive_timeout(KEEP_ALIVE);
    let graceful = GracefulShutdown::new();
    let mut listener = CappedListener::new(listener, MAX_CONNECTIONS, "HTTP");
    while let Some((stream, permit)) = listener.accept(&mut shutdown).await {
        // Who is asking: reads without a read token are for loopback peers.
        let peer = stream.peer_addr().ok();
        let app = app.clone();
        let service = TowerToHyperService::new(tower::util::MapRequest::new(
            app,
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                if let Some(peer) = peer {
                    request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                }
                request
            },
        ));
        match &tls {
            None => {
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let connection = graceful.watch(connection.into_owned());
                tokio::spawn(async move {
                    // Errors here are the client's (a reset, a timeout);
                    // nothing to report.
                    let _ = connection.await;
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let (acceptor, builder, watcher) = (acceptor.clone(), builder.clone(), graceful.watcher());
                tokio::spawn(async move {
                    let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await else {
                        return;
                    };
                    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(connection.into_owned()).await;
                    drop(permit);
                });
            }
        }
    }
    graceful.shutdown().await;
    Ok(())
}
