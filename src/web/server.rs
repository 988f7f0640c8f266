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
    let slots = Slots::new(
        max_connections(),
        Refusals {
            all: "too many connections; try again shortly",
            one_address: "too many connections from one address; try again shortly",
        },
    );
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
        let slot = match slots.take(Some(peer.ip())) {
            Ok(slot) => ConnectionSlot {
                _slot: Arc::new(slot),
            },
            Err(reason) => {
                crate::metrics::METRICS
                    .connections_refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::spawn(refuse(tcp, acceptor.is_none(), reason));
                continue;
            }
        };
        let held = slot.clone();
        // Handlers see who is asking (a WebSocket client's share of the slots).
        let service: Routes = TowerToHyperService::new(
            router
                .clone()
                .map_request(move |mut request: Request<Incoming>| {
                    request.extensions_mut().insert(Peer(peer.ip()));
                    // An upgrade (WebSocket) keeps the connection's slot for its socket's life.
                    request.extensions_mut().insert(held.clone());
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
    if tokio::time::timeout(DRAIN_DEADLINE, slots.all_free())
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
async fn refuse(mut tcp: TcpStream, plain: bool, reason: &'static str) {
    if plain {
        let body = serde_json::json!({ "error": reason }).to_string();
        let reply = format!(
            "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(reply.as_bytes())).await;
    }
}

/// The reasons a [`Slots`] gives when it has none to give.
#[derive(Clone, Copy)]
pub struct Refusals {
    /// Every slot is taken.
    pub all: &'static str,
    /// The address has its share.
    pub one_address: &'static str,
}

/// A number of slots (connections, WebSocket clients), of which one address may hold at most a
/// quarter (all of them when there are 16 or fewer), so that one client cannot take them all.
pub struct Slots {
    all: Arc<Semaphore>,
    by_address: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    max: usize,
    share: usize,
    refusals: Refusals,
}

/// One slot, given back when dropped.
pub struct Slot {
    _all: tokio::sync::OwnedSemaphorePermit,
    slots: Arc<Slots>,
    address: Option<std::net::IpAddr>,
}

/// A connection's slot, in its requests' extensions: an upgraded WebSocket keeps it.
#[derive(Clone)]
pub struct ConnectionSlot {
    _slot: Arc<Slot>,
}

impl Slots {
    /// `max` slots.
    pub fn new(max: usize, refusals: Refusals) -> Arc<Slots> {
        Arc::new(Slots {
            all: Arc::new(Semaphore::new(max)),
            by_address: std::sync::Mutex::new(std::collections::HashMap::new()),
            max,
            share: if max <= 16 { max } else { max / 4 },
            refusals,
        })
    }

    /// At most this many to one address.
    pub fn share(&self) -> usize {
        self.share
    }

    /// All of them.
    pub fn max(&self) -> usize {
        self.max
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<std::net::IpAddr, usize>> {
        self.by_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for a client at `address`, or why not.
    ///
    /// # Errors
    /// Every slot is taken, or the address has its share.
    pub fn take(self: &Arc<Self>, address: Option<std::net::IpAddr>) -> Result<Slot, &'static str> {
        let Ok(all) = Arc::clone(&self.all).try_acquire_owned() else {
            return Err(self.refusals.all);
        };
        if let Some(address) = address {
            let mut by_address = self.lock();
            let held = by_address.entry(address).or_default();
            if *held >= self.share {
                return Err(self.refusals.one_address);
            }
            *held += 1;
        }
        Ok(Slot {
            _all: all,
            slots: Arc::clone(self),
            address,
        })
    }

    /// Waits until every slot is free.
    async fn all_free(&self) {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        let _ = self.all.acquire_many(all).await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(address) = self.address {
            let mut by_address = self.slots.lock();
            if let Some(held) = by_address.get_mut(&address) {
                *held -= 1;
                if *held == 0 {
                    by_address.remove(&address);
                }
            }
        }
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
    /// Held until the body is dropped (sent, or given up).
    _guard: Option<Box<dyn Send + Sync>>,
}

/// A response body of `text` that must be sent within `timeout` (else the connection is
/// closed), holding `guard` until it is sent or given up.
pub fn response_body(
    text: String,
    timeout: Duration,
    guard: impl Send + Sync + 'static,
) -> axum::body::Body {
    let mut body = Deadline::new(http_body_util::Full::new(bytes::Bytes::from(text)), timeout);
    body._guard = Some(Box::new(guard));
    axum::body::Body::new(body)
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
            _guard: None,
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
