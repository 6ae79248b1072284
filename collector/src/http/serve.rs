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

/// Connections of `listener` once their TLS handshake with `acceptor` is
/// done, for the gRPC server. Handshakes run side by side, so a slow client
/// holds up no other; a failed one is dropped.
pub(crate) fn tls_incoming(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    mut shutdown: watch::Receiver<bool>,
) -> tokio_stream::wrappers::ReceiverStream<
    Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                break;
            }
            let (tx, acceptor) = (tx.clone(), acceptor.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%error, "agent TLS handshake failed"),
                    Err(_) => tracing::debug!("agent TLS handshake timed out"),
                }
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
    let connections = std::sync::Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    // When the cap was last reported: at most once a minute, so a server
    // that runs at its limit does not fill the log.
    let mut warned_full: Option<tokio::time::Instant> = None;
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, _) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, most likely: wait for some to
                // be given back rather than spin.
                tracing::warn!(%error, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if connections.available_permits() == 0 && warned_full.is_none_or(|at| at.elapsed() >= FULL_WARNING_EVERY) {
            tracing::warn!(
                limit = MAX_CONNECTIONS,
                "HTTP connections at their limit; new ones wait"
            );
            warned_full = Some(tokio::time::Instant::now());
        }
        let _ = stream.set_nodelay(true);
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
