//! Starting the real service on port 0 and talking to it over real HTTP and WebSocket.

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use stampede::app::App;
use stampede::config::Config;

/// A fresh, empty store directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stampede-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The service with its store in `dir`, on 127.0.0.1:0, adjusted by `tweak`.
pub async fn start(dir: &std::path::Path, tweak: impl FnOnce(&mut Config)) -> App {
    let mut config = Config::default();
    config.web.listen = "127.0.0.1:0".into();
    config.store.path = dir.to_owned();
    tweak(&mut config);
    config.validate().unwrap();
    stampede::app::start(config).await.unwrap()
}

/// One HTTP request; the status and the body.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: impl Into<Bytes>,
    token: Option<&str>,
) -> (StatusCode, Vec<u8>) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| ("authorization", a))
        .into_iter()
        .collect();
    let (status, _, body) = request_with(addr, method, path, &headers, body).await;
    (status, body)
}

/// One HTTP request with `headers` (a `host` among them replaces the default); the status, the
/// response headers and the body.
pub async fn request_with(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (StatusCode, hyper::HeaderMap, Vec<u8>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client
        .request(req.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, headers, body)
}

pub async fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = request(addr, Method::GET, path, Bytes::new(), None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap()
}

pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    body: impl Into<Bytes>,
    token: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let (status, body) = request(addr, Method::POST, path, body, token).await;
    let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, v)
}

/// A telemetry line.
pub fn line(name: &str, time: &str, distance: f64, health: i64, magic: i64) -> String {
    format!(
        "{{\"Name\":\"{name}\",\"StatusTime\":\"{time}\",\"Latitude\":40.75,\"Longitude\":-73.98,\"Distance\":{distance},\"HealthPoints\":{health},\"MagicPoints\":{magic}}}"
    )
}
