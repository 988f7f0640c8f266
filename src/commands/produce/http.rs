//! `stampede produce --to http://HOST:PORT/ingest`: the fleet as batched `POST`s.
//!
//! A generator thread renders and paces batches; a few async workers post them over kept-alive
//! connections. Connection errors and 5xx answers are retried with exponential backoff (for up
//! to a minute of failures in a row); a 413 splits the batch in half; a 401 stops the run with
//! advice. With more than one connection, batches may arrive out of order: by at most
//! `connections` batches, which stays inside the default 5 s out-of-orderness when a batch
//! spans a simulated second.

use crate::backoff::Backoff;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use tokio::sync::{mpsc, Mutex};

use super::{Generator, ProduceOptions, Progress};

/// Largest request body the producer builds (the server's default limit is 8 MiB).
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Give up after this long without a successful request.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// What the server said about the records it was sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HttpReport {
    /// Records generated and sent.
    pub sent: u64,
    /// Accepted by the server.
    pub accepted: u64,
    /// Rejected by the server (bad records, too late).
    pub rejected: u64,
    /// Records the server refused as too large even alone (413).
    pub oversized: u64,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// 401.
    #[error(
        "{0} refused the records (401): pass the server's token with --token or STAMPEDE_TOKEN"
    )]
    Unauthorized(String),
    /// Nothing got through for a minute.
    #[error("cannot deliver to {uri}: {last} (retried for {secs} s)")]
    Unreachable {
        /// The endpoint.
        uri: String,
        /// The last error.
        last: String,
        /// How long it tried.
        secs: u64,
    },
    /// Another 4xx: the server will not take this request, retrying is pointless.
    #[error("{uri} answered {status}: {body}")]
    Refused {
        /// The endpoint.
        uri: String,
        /// The status.
        status: StatusCode,
        /// Its explanation.
        body: String,
    },
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The server's TLS certificate is not trusted.
    #[error("{uri}: the server's certificate is not trusted ({error}); for a service with a certificate of its own, point SSL_CERT_FILE at the CA that signed it")]
    Untrusted {
        /// The endpoint.
        uri: String,
        /// What TLS said.
        error: String,
    },
    /// TLS could not be set up.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// Runs the producer against an HTTP endpoint until `msgs` are delivered (or forever).
///
/// # Errors
/// See [`HttpError`]; records already delivered stay delivered.
pub fn produce_http(
    opts: ProduceOptions,
    target: &super::HttpTarget,
) -> Result<HttpReport, HttpError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(HttpError::Runtime)?;
    runtime.block_on(run(opts, target.clone()))
}

async fn run(opts: ProduceOptions, target: super::HttpTarget) -> Result<HttpReport, HttpError> {
    let connections = target.connections.max(1);
    let (tx, rx) = mpsc::channel::<(Bytes, u64)>(connections * 2);
    let mut generator = Generator::new(&opts);
    let started = generator.started;
    let batch_records = target.batch_records.max(1);
    let producer = std::thread::spawn(move || {
        let mut buf = String::with_capacity(MAX_BATCH_BYTES + 4_096);
        loop {
            buf.clear();
            let n = generator.fill(&mut buf, batch_records, MAX_BATCH_BYTES);
            if n == 0
                || tx
                    .blocking_send((Bytes::from(buf.clone()), n as u64))
                    .is_err()
            {
                return generator.written;
            }
        }
    });
    let client = crate::clients::http::client(connections).map_err(HttpError::Tls)?;
    let rx = Arc::new(Mutex::new(rx));
    let report = Arc::new(std::sync::Mutex::new(HttpReport::default()));
    let progress = Arc::new(std::sync::Mutex::new(Progress::new(opts.progress)));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (rx, client, target) = (Arc::clone(&rx), client.clone(), target.clone());
        let (report, progress) = (Arc::clone(&report), Arc::clone(&progress));
        workers.spawn(async move {
            loop {
                let next = rx.lock().await.recv().await;
                let Some((body, count)) = next else {
                    return Ok(());
                };
                let tally = deliver(&client, &target, body).await?;
                let snapshot = {
                    let mut r = report
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    r.sent += count;
                    r.accepted += tally.accepted;
                    r.rejected += tally.rejected;
                    r.oversized += tally.oversized;
                    *r
                };
                if let Ok(mut p) = progress.lock() {
                    p.show(snapshot.sent, started, &server_says(&snapshot));
                }
            }
        });
    }
    let mut outcome = Ok(());
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // Stop everything: the generator sees its channel close.
                rx.lock().await.close();
                workers.abort_all();
                outcome = Err(e);
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    let generated = tokio::task::spawn_blocking(move || producer.join().unwrap_or(0))
        .await
        .unwrap_or(0);
    let report = *report
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Ok(mut p) = progress.lock() {
        p.finish(report.sent, started, &server_says(&report));
    }
    outcome?;
    debug_assert_eq!(generated, report.sent);
    Ok(report)
}

fn server_says(r: &HttpReport) -> String {
    format!("; server accepted {}, rejected {}", r.accepted, r.rejected)
}

/// Posts one batch, splitting it on 413 and retrying transient failures.
async fn deliver(
    client: &crate::clients::http::HttpClient,
    target: &super::HttpTarget,
    body: Bytes,
) -> Result<HttpReport, HttpError> {
    let mut tally = HttpReport::default();
    let mut pending = vec![body];
    while let Some(body) = pending.pop() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let first_failure = Instant::now();
        loop {
            let result = post(client, target, body.clone()).await;
            let last = match result {
                Ok((StatusCode::OK, reply)) => {
                    let v: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
                    tally.accepted += v["accepted"].as_u64().unwrap_or(0);
                    tally.rejected += v["rejected"].as_u64().unwrap_or(0);
                    break;
                }
                Ok((StatusCode::PAYLOAD_TOO_LARGE, _)) => {
                    match split(&body) {
                        Some((a, b)) => {
                            pending.push(b);
                            pending.push(a);
                        }
                        None => tally.oversized += 1,
                    }
                    break;
                }
                Ok((StatusCode::UNAUTHORIZED, _)) => {
                    return Err(HttpError::Unauthorized(target.uri.to_string()))
                }
                Ok((status, reply)) if status.is_server_error() => {
                    format!("{status}: {}", String::from_utf8_lossy(&reply))
                }
                Ok((status, reply)) => {
                    return Err(HttpError::Refused {
                        uri: target.uri.to_string(),
                        status,
                        body: String::from_utf8_lossy(&reply).into_owned(),
                    })
                }
                // Retrying will not make a certificate trusted.
                Err(e) if e.untrusted => {
                    return Err(HttpError::Untrusted {
                        uri: target.uri.to_string(),
                        error: e.message,
                    })
                }
                Err(e) => e.message,
            };
            if first_failure.elapsed() >= GIVE_UP_AFTER {
                return Err(HttpError::Unreachable {
                    uri: target.uri.to_string(),
                    last,
                    secs: GIVE_UP_AFTER.as_secs(),
                });
            }
            tracing::warn!(error = %last, retry_in_ms = backoff.peek().as_millis() as u64, "delivery failed; retrying");
            backoff.wait().await;
        }
    }
    Ok(tally)
}

async fn post(
    client: &crate::clients::http::HttpClient,
    target: &super::HttpTarget,
    body: Bytes,
) -> Result<(StatusCode, Bytes), Failure> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(target.uri.clone())
        .header("content-type", "application/x-ndjson");
    if let Some(token) = &target.token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req.body(Full::new(body)).map_err(|e| Failure::other(&e))?;
    let res = client.request(req).await.map_err(|e| {
        // The connector's error says why (refused, unreachable, a certificate); the client's
        // wrapper does not.
        let mut failure = Failure::other(&e);
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            failure.message = format!("{}: {s}", failure.message);
            failure.untrusted |= is_certificate_error(s);
            source = s.source();
        }
        failure
    })?;
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| Failure::other(&e))?
        .to_bytes();
    Ok((status, body))
}

/// Splits an NDJSON body at the newline nearest its middle; `None` for a single record.
fn split(body: &Bytes) -> Option<(Bytes, Bytes)> {
    let trimmed = body.len() - body.iter().rev().take_while(|b| **b == b'\n').count();
    let mid = trimmed / 2;
    let after = memchr::memchr(b'\n', &body[mid..trimmed]).map(|i| mid + i);
    let before = memchr::memrchr(b'\n', &body[..mid]);
    let cut = match (before, after) {
        (Some(b), Some(a)) => {
            if mid - b <= a - mid {
                b
            } else {
                a
            }
        }
        (Some(b), None) => b,
        (None, Some(a)) => a,
        (None, None) => return None,
    };
    Some((body.slice(..cut + 1), body.slice(cut + 1..)))
}

/// Why a request got no answer.
struct Failure {
    message: String,
    /// The server's certificate was refused: retrying cannot help.
    untrusted: bool,
}

impl Failure {
    fn other(e: &dyn std::fmt::Display) -> Failure {
        Failure {
            message: e.to_string(),
            untrusted: false,
        }
    }
}

/// Whether `e` is rustls refusing the server's certificate. The connectors hand it over wrapped
/// in `io::Error`s (two deep), whose `source()` skips what they wrap: unwrapped here.
fn is_certificate_error(mut e: &(dyn std::error::Error + 'static)) -> bool {
    loop {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return matches!(tls, rustls::Error::InvalidCertificate(_));
        }
        match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => e = inner,
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_between_records() {
        let body = Bytes::from_static(b"aa\nbbbb\ncc\ndd\n");
        let (a, b) = split(&body).unwrap();
        assert_eq!((&a[..], &b[..]), (&b"aa\nbbbb\n"[..], &b"cc\ndd\n"[..]));
        assert!(split(&Bytes::from_static(b"single\n")).is_none());
        assert!(split(&Bytes::from_static(b"single")).is_none());
        let (a, b) = split(&Bytes::from_static(b"x\ny")).unwrap();
        assert_eq!((&a[..], &b[..]), (&b"x\n"[..], &b"y"[..]));
    }
}
