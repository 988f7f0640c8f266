//! The accept loop of the service's one port, plain HTTP or HTTPS: hyper's HTTP/1 with upgrades
//! (WebSocket), each connection in a task of its own.
//!
//! Bounded against slow clients: a connection must send a request's headers within
//! [`HEADER_TIMEOUT`] (and an idle keep-alive connection is closed after as long), TLS
//! handshakes too; at most [`max_connections`] are open at once (the rest are answered 503 and
//! closed), so a few hundred half-sent requests cannot take every file descriptor and starve
//! ingest and `/healthz`. On stop it takes no more connections and lets those under way finish
//! their request, for at most [`DRAIN_DEADLINE`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// The router as one connection serves it.
type Routes = TowerToHyperService<
    tower::util::BoxCloneService<
        Request<Incoming>,
        axum::response::Response,
        std::convert::Infallible,
    >,
>;

/// The address a request came from, in its extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer(pub std::net::IpAddr);

/// A request's headers (and a TLS handshake) must arrive within this; an idle keep-alive
/// connection is closed after as long.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// On stop, connections under way have this long to finish.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// Connections open at once at most: what the process's file descriptors allow, less a margin
/// for the store, the archive and the clients of the outputs (`/proc/self/limits`; 1,024 when
/// it cannot be read), and at most 100,000.
pub fn max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<usize>().ok()
        })
        .unwrap_or(1_024);
    soft.saturating_sub(soft / 8 + 32).clamp(16, 100_000)
}

/// Serves `router` on `listener` (over TLS with `tls`) until `stop`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    stop: CancellationToken,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let max = max_connections();
    let slots = Arc::new(Semaphore::new(max));
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            crate::metrics::METRICS
                .connections_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(refuse(tcp, acceptor.is_none()));
            continue;
        };
        // Handlers see who is asking (a WebSocket client's share of the slots).
        let service: Routes = TowerToHyperService::new(
            router
                .clone()
                .map_request(move |mut request: Request<Incoming>| {
                    request.extensions_mut().insert(Peer(peer.ip()));
                    request
                })
                .boxed_clone(),
        );
        let acceptor = acceptor.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                None => connection(tcp, peer, service, &stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => connection(tls, peer, service, &stop).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    // Every connection holds a slot until it ends: all slots free means all ended.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_DEADLINE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain deadline: closed");
    }
}

/// Serves one connection; on `stop`, lets the request under way finish and closes.
async fn connection<I>(io: I, peer: SocketAddr, service: Routes, stop: &CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// A connection past the limit: told so on plain HTTP (a 503 a client can retry), closed.
async fn refuse(mut tcp: TcpStream, plain: bool) {
    if plain {
        let reply = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: application/json\r\ncontent-length: 51\r\nconnection: close\r\n\r\n{\"error\":\"too many connections; try again shortly\"}";
        let _ = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(reply)).await;
    }
}

/// A request's body must have arrived this long after its headers; past it the handler reading
/// it gets an error (and answers 408), so a body that stalls cannot hold its buffer and its
/// connection for ever.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Gives every request's body [`BODY_TIMEOUT`] to arrive (a router layer).
pub async fn body_deadline(
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let request = request.map(|body| axum::body::Body::new(Deadline::new(body, BODY_TIMEOUT)));
    next.run(request).await
}

/// A request body that fails once `timeout` has passed before its end.
struct Deadline<B> {
    inner: std::pin::Pin<Box<B>>,
    until: std::pin::Pin<Box<tokio::time::Sleep>>,
}

/// The error of a body that did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s", BODY_TIMEOUT.as_secs())]
pub struct BodyTimedOut;

impl<B> Deadline<B> {
    fn new(inner: B, timeout: Duration) -> Deadline<B> {
        Deadline {
            inner: Box::pin(inner),
            until: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl<B> hyper::body::Body for Deadline<B>
where
    B: hyper::body::Body<Data = bytes::Bytes>,
    B::Error: Into<axum::BoxError>,
{
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, axum::BoxError>>> {
        use std::future::Future as _;
        use std::task::Poll;
        let this = self.get_mut();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match this.until.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimedOut.into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
