//! A fault-injecting proxy in front of a real AWS emulator. The emulators never throttle, never
//! leave keys unprocessed and never expire an iterator early; AWS does all three. The proxy
//! forwards every request to the emulator over the real wire protocol, except that by a fixed
//! schedule (per `X-Amz-Target`) it answers in the emulator's place with the error AWS would
//! send, or does part of a batch and reports the rest as AWS does:
//!
//! * `GetRecords`: `ProvisionedThroughputExceededException`, `ExpiredIteratorException`, and
//!   HTTP 500 `InternalFailure`, each on a share of the calls;
//! * `PutRecords`: every third record refused with `ProvisionedThroughputExceededException`
//!   (the others are written), as a partial failure;
//! * `BatchGetItem`: only the first half of the keys is read; the rest come back as
//!   `UnprocessedKeys`;
//! * `PutItem`, `UpdateItem`, `Scan`: `ProvisionedThroughputExceededException` on a share of the
//!   calls, and HTTP 500 `InternalServerError` on some `PutItem`s.
//!
//! Nothing is forwarded for a call answered with an error, so the emulator's state is exactly
//! what AWS's would be. [`FaultProxy::injected`] counts what was injected, so a test can show
//! that each path was taken.
//!
//! [`FaultProxy::passthrough`] injects none of these; its [`FaultProxy::hold`] keeps every
//! request whose body mentions a name (a table) unanswered until [`FaultProxy::release`]: a
//! service that hangs, as a paused or overloaded one does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

type Upstream = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

struct Shared {
    upstream: String,
    client: Upstream,
    /// Calls seen per operation, and records seen by `PutRecords`.
    calls: Mutex<BTreeMap<String, u64>>,
    injected: Mutex<BTreeMap<&'static str, u64>>,
    /// Whether to inject the scheduled faults.
    faults: bool,
    /// Requests whose body contains this are held until it is cleared.
    hold: tokio::sync::watch::Sender<Option<String>>,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    /// Where to point the SDK (`AWS_ENDPOINT_URL_…`).
    pub url: String,
    shared: Arc<Shared>,
    _runtime: tokio::runtime::Runtime,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 in front of `upstream` (`http://HOST:PORT`).
    pub fn start(upstream: &str) -> FaultProxy {
        FaultProxy::with_faults(upstream, true)
    }

    /// A proxy that injects no faults (only what [`FaultProxy::hold`] asks for).
    pub fn passthrough(upstream: &str) -> FaultProxy {
        FaultProxy::with_faults(upstream, false)
    }

    /// From now on, requests whose body contains `name` wait, unanswered, until released.
    pub fn hold(&self, name: &str) {
        self.shared.hold.send_replace(Some(name.to_owned()));
    }

    /// Lets every held request through.
    pub fn release(&self) {
        self.shared.hold.send_replace(None);
    }

    fn with_faults(upstream: &str, faults: bool) -> FaultProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            calls: Mutex::new(BTreeMap::new()),
            injected: Mutex::new(BTreeMap::new()),
            faults,
            hold: tokio::sync::watch::channel(None).0,
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        runtime.spawn(async move { axum::serve(listener, app).await });
        FaultProxy {
            url,
            shared,
            _runtime: runtime,
        }
    }

    /// How many faults of each kind were injected so far.
    pub fn injected(&self) -> BTreeMap<&'static str, u64> {
        self.shared.injected.lock().unwrap().clone()
    }
}

impl Shared {
    /// Counts one more of `what`; returns its number (from 1).
    fn count(&self, what: &str, n: u64) -> u64 {
        let mut calls = self.calls.lock().unwrap();
        let c = calls.entry(what.to_owned()).or_default();
        *c += n;
        *c
    }

    fn inject(&self, kind: &'static str, n: u64) {
        *self.injected.lock().unwrap().entry(kind).or_default() += n;
    }
}

/// The error AWS sends, in the request's JSON protocol.
fn error(status: StatusCode, content_type: &HeaderValue, code: &str) -> Response<Body> {
    let body = json!({"__type": code, "message": "injected by the test's fault proxy"});
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-amzn-errortype", code)
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let op = target.rsplit('.').next().unwrap_or("").to_owned();
    let content_type = parts
        .headers
        .get("content-type")
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("application/x-amz-json-1.0"));
    let mut hold = shared.hold.subscribe();
    let held = |h: &Option<String>| {
        h.as_deref()
            .is_some_and(|name| contains(&body, name.as_bytes()))
    };
    if held(&hold.borrow()) {
        shared.inject("requests held", 1);
        let _ = hold.wait_for(|h| !held(h)).await;
    }
    if !shared.faults {
        return forward(&shared, &parts.headers, body).await.map_or_else(
            |r| r,
            |(status, headers, body)| respond(status, headers, body),
        );
    }
    let throttled = "ProvisionedThroughputExceededException";
    match op.as_str() {
        "GetRecords" => match shared.count(&op, 1) % 6 {
            1 => {
                shared.inject("GetRecords throttled", 1);
                return error(StatusCode::BAD_REQUEST, &content_type, throttled);
            }
            3 => {
                shared.inject("GetRecords iterator expired", 1);
                return error(
                    StatusCode::BAD_REQUEST,
                    &content_type,
                    "ExpiredIteratorException",
                );
            }
            5 => {
                shared.inject("GetRecords internal failure", 1);
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &content_type,
                    "InternalFailure",
                );
            }
            _ => {}
        },
        "PutItem" => match shared.count(&op, 1) % 10 {
            1 | 4 | 7 => {
                shared.inject("PutItem throttled", 1);
                return error(StatusCode::BAD_REQUEST, &content_type, throttled);
            }
            9 => {
                shared.inject("PutItem internal error", 1);
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &content_type,
                    "InternalServerError",
                );
            }
            _ => {}
        },
        "UpdateItem" | "Scan" if shared.count(&op, 1).is_multiple_of(7) => {
            shared.inject(
                if op == "Scan" {
                    "Scan throttled"
                } else {
                    "UpdateItem throttled"
                },
                1,
            );
            return error(StatusCode::BAD_REQUEST, &content_type, throttled);
        }
        "PutRecords" => return put_records(&shared, parts.headers, body).await,
        "BatchGetItem" => return batch_get_item(&shared, parts.headers, body).await,
        _ => {}
    }
    forward(&shared, &parts.headers, body).await.map_or_else(
        |r| r,
        |(status, headers, body)| respond(status, headers, body),
    )
}

/// The emulator's answer, or a 502 saying why it could not be had.
async fn forward(
    shared: &Shared,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, HeaderMap, Bytes), Response<Body>> {
    let mut request = Request::post(format!("{}/", shared.upstream));
    for (k, v) in headers {
        if k != "content-length" && k != "transfer-encoding" && k != "host" {
            request = request.header(k, v);
        }
    }
    let request = request
        .header("content-length", body.len())
        .body(Full::new(body))
        .unwrap();
    match shared.client.request(request).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            Ok((parts.status, parts.headers, body))
        }
        Err(e) => Err(Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::from(format!("fault proxy: upstream: {e}")))
            .unwrap()),
    }
}

fn respond(status: StatusCode, headers: HeaderMap, body: Bytes) -> Response<Body> {
    let mut response = Response::builder().status(status);
    for (k, v) in &headers {
        // The body's CRC may no longer match a body the proxy rewrote.
        let dropped = [
            "content-length",
            "transfer-encoding",
            "connection",
            "x-amz-crc32",
        ];
        if !dropped.contains(&k.as_str()) {
            response = response.header(k, v);
        }
    }
    response.body(Body::from(body)).unwrap()
}

/// Every third record is refused; the others are written by the emulator, and the answer lists
/// each record's outcome in order, as `PutRecords` does.
async fn put_records(shared: &Shared, headers: HeaderMap, body: Bytes) -> Response<Body> {
    let mut request: Value = serde_json::from_slice(&body).unwrap();
    let records = request["Records"].as_array().cloned().unwrap_or_default();
    let first = shared.count("PutRecords records", records.len() as u64) - records.len() as u64;
    let refused: Vec<bool> = (0..records.len() as u64)
        .map(|i| (first + i + 1).is_multiple_of(3))
        .collect();
    let kept: Vec<Value> = records
        .iter()
        .zip(&refused)
        .filter(|(_, r)| !**r)
        .map(|(v, _)| v.clone())
        .collect();
    let failed = refused.iter().filter(|r| **r).count();
    shared.inject("PutRecords records refused", failed as u64);
    let mut written: Vec<Value> = Vec::new();
    let mut out_headers = HeaderMap::new();
    if !kept.is_empty() {
        request["Records"] = Value::Array(kept);
        let body = Bytes::from(request.to_string());
        let (status, headers, answer) = match forward(shared, &headers, body).await {
            Ok(r) => r,
            Err(r) => return r,
        };
        if status != StatusCode::OK {
            return respond(status, headers, answer);
        }
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        written = answer["Records"].as_array().cloned().unwrap_or_default();
        out_headers = headers;
    }
    let mut written = written.into_iter();
    let results: Vec<Value> = refused
        .iter()
        .map(|r| {
            if *r {
                json!({"ErrorCode": "ProvisionedThroughputExceededException",
                       "ErrorMessage": "Rate exceeded for shard (injected by the test's fault proxy)"})
            } else {
                written.next().unwrap()
            }
        })
        .collect();
    let answer = json!({"FailedRecordCount": failed, "Records": results});
    if out_headers.is_empty() {
        out_headers.insert(
            "content-type",
            HeaderValue::from_static("application/x-amz-json-1.1"),
        );
    }
    respond(StatusCode::OK, out_headers, Bytes::from(answer.to_string()))
}

/// Only the first half of each table's keys is read; the rest is returned as `UnprocessedKeys`.
async fn batch_get_item(shared: &Shared, headers: HeaderMap, body: Bytes) -> Response<Body> {
    let mut request: Value = serde_json::from_slice(&body).unwrap();
    let mut unprocessed = serde_json::Map::new();
    let mut left = 0;
    if let Some(tables) = request["RequestItems"].as_object_mut() {
        for (table, spec) in tables.iter_mut() {
            let Some(keys) = spec["Keys"].as_array_mut() else {
                continue;
            };
            if keys.len() < 2 {
                continue;
            }
            let rest = keys.split_off(keys.len() / 2);
            left += rest.len();
            let mut later = spec.clone();
            later["Keys"] = Value::Array(rest);
            unprocessed.insert(table.clone(), later);
        }
    }
    shared.inject("BatchGetItem keys unprocessed", left as u64);
    let (status, headers, answer) =
        match forward(shared, &headers, Bytes::from(request.to_string())).await {
            Ok(r) => r,
            Err(r) => return r,
        };
    if status != StatusCode::OK {
        return respond(status, headers, answer);
    }
    let mut answer: Value = serde_json::from_slice(&answer).unwrap();
    answer["UnprocessedKeys"] = Value::Object(unprocessed);
    respond(status, headers, Bytes::from(answer.to_string()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len().max(1)).any(|w| w == needle)
}
