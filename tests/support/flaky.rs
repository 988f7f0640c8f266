//! A TCP proxy that misbehaves on demand, between Stampede and one real component (the broker,
//! an AWS emulator, the SMTP server): what a flaky network does to a connection, below any
//! protocol.
//!
//! - [`Fault::Latency`]: every chunk, each way, waits that long before it is passed on;
//! - [`Fault::Reset`]: every connection, open or new, is reset (RST) at once;
//! - [`Fault::Stall`]: connections are accepted (new ones too) and nothing more passes either
//!   way until the fault ends — a peer that accepts and never answers;
//! - [`Fault::Refuse`]: nothing listens; connecting is refused, and open connections are reset.
//!
//! [`Flaky::connections`] counts the connections accepted, so that a test can show that a client
//! backs off rather than storming a peer that is down.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the network does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: bytes pass.
    None,
    /// Each chunk waits this long, each way.
    Latency(Duration),
    /// Connections are reset.
    Reset,
    /// Connections are accepted and nothing passes.
    Stall,
    /// Connecting is refused.
    Refuse,
}

/// A running proxy; stops when dropped.
pub struct Flaky {
    /// Where to point the client.
    pub addr: SocketAddr,
    fault: watch::Sender<Fault>,
    connections: Arc<AtomicU64>,
    _runtime: tokio::runtime::Runtime,
}

impl Flaky {
    /// A proxy on 127.0.0.1 in front of `upstream` (`HOST:PORT`), passing bytes.
    pub fn start(upstream: &str) -> Flaky {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let (fault, _) = watch::channel(Fault::None);
        let connections = Arc::new(AtomicU64::new(0));
        runtime.spawn(listen(
            listener,
            upstream.to_owned(),
            fault.subscribe(),
            Arc::clone(&connections),
        ));
        Flaky {
            addr,
            fault,
            connections,
            _runtime: runtime,
        }
    }

    /// The network does `fault` from now on.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// Accepts while nothing refuses; closes the socket while [`Fault::Refuse`] lasts and listens
/// again on the same address after.
async fn listen(
    listener: TcpListener,
    upstream: String,
    mut fault: watch::Receiver<Fault>,
    connections: Arc<AtomicU64>,
) {
    let addr = listener.local_addr().unwrap();
    let mut listener = Some(listener);
    loop {
        let now = *fault.borrow_and_update();
        match (&listener, now) {
            (Some(_), Fault::Refuse) => listener = None,
            (None, f) if f != Fault::Refuse => {
                // The port was ours a moment ago; another process may take it meanwhile, which
                // a test would see as a failure to reconnect.
                listener = Some(TcpListener::bind(addr).await.unwrap());
            }
            _ => {}
        }
        let Some(l) = &listener else {
            if fault.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            accepted = l.accept() => {
                let Ok((inbound, _)) = accepted else { continue };
                connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(inbound, upstream.clone(), fault.clone()));
            }
            changed = fault.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

async fn serve(inbound: TcpStream, upstream: String, mut fault: watch::Receiver<Fault>) {
    // A stall or a reset holds from the first byte: wait for a fault to end before connecting.
    loop {
        let now = *fault.borrow_and_update();
        match now {
            Fault::Reset | Fault::Refuse => return reset(&inbound),
            Fault::Stall => {
                if fault.changed().await.is_err() {
                    return;
                }
            }
            Fault::None | Fault::Latency(_) => break,
        }
    }
    let Ok(outbound) = TcpStream::connect(&upstream).await else {
        return reset(&inbound);
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let up = pipe(in_read, out_write, fault.clone());
    let down = pipe(out_read, in_write, fault);
    // Either side ending ends both: a reset of one is a reset of the connection.
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// Passes chunks from `from` to `to` as the fault says, until either end closes or a reset.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut fault: watch::Receiver<Fault>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
            },
            changed = fault.changed() => {
                if changed.is_err() {
                    return;
                }
                if matches!(*fault.borrow(), Fault::Reset | Fault::Refuse) {
                    reset(from.as_ref());
                    return reset(to.as_ref());
                }
                continue;
            }
        };
        loop {
            let now = *fault.borrow_and_update();
            match now {
                Fault::Reset | Fault::Refuse => {
                    reset(from.as_ref());
                    return reset(to.as_ref());
                }
                Fault::Stall => {
                    if fault.changed().await.is_err() {
                        return;
                    }
                }
                Fault::Latency(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Fault::None => break,
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Closes with RST rather than FIN.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}
