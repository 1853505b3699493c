//! Connections: the per-process cap on open connections that the gRPC and
//! HTTP listeners share, and the HTTP server loop (hyper, with a deadline for
//! a request's header so that a client sending half a header is dropped).
//!
//! Over the cap, a new connection is accepted and closed at once (counted in
//! `crm_connections_refused_total`), rather than left in the kernel's backlog
//! where it would wait without an answer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The cap on open connections (both listeners together).
#[derive(Clone)]
pub struct ConnectionCap {
    permits: Arc<Semaphore>,
    max: usize,
    refused: Counter,
}

impl ConnectionCap {
    /// At most `max` connections open at once; refusals counted in `refused`.
    pub fn new(max: usize, refused: Counter) -> Self {
        let max = max.max(1);
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
            refused,
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// Accepts the next connection of `listener` that fits under the cap.
    /// Accept errors (a peer gone before it was accepted, or the process out
    /// of file descriptors) are waited out, never returned: a listener must
    /// not stop over one bad connection.
    async fn accept(&self, listener: &TcpListener) -> Capped {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    stream.set_nodelay(true).ok();
                    return Capped {
                        stream,
                        _permit: permit,
                    };
                }
                Err(_) => {
                    self.refused.inc();
                    tracing::debug!(max = self.max, "connection refused: at the connection cap");
                    drop(stream);
                }
            }
        }
    }
}

/// A connection holding its place under the cap until it is dropped.
pub struct Capped {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Capped {
    type ConnectInfo = <TcpStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// The gRPC listener's connections, under the cap (for tonic's
/// `serve_with_incoming_shutdown`).
pub fn incoming(
    listener: TcpListener,
    cap: ConnectionCap,
) -> impl Stream<Item = Result<Capped, io::Error>> {
    futures_util::stream::unfold((listener, cap), |(listener, cap)| async move {
        let conn = cap.accept(&listener).await;
        Some((Ok(conn), (listener, cap)))
    })
}

/// Serves `router` on `listener` (HTTP/1.1 and h2c) until `shutdown`
/// resolves, then lets the open connections finish. A client must send a
/// request's whole header within `header_timeout` or it is disconnected.
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    cap: ConnectionCap,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            conn = cap.accept(&listener) => conn,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(conn), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Makes ring the process's TLS provider (as NATS uses), which every
/// `reqwest` client of the process needs (crm builds reqwest without a
/// provider of its own). Idempotent.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
