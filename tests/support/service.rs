//! Starting the real service on port 0 and talking to it over real HTTP and WebSocket.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use stampede::app::App;
use stampede::config::Config;

/// A fresh, empty directory for one test, removed when the guard is dropped — unless the test
/// is failing (panicking): then it is kept for a look, and its path printed. Reads as a `Path`.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `stampede-test-NAME-PID` under the system's temp dir, emptied.
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("stampede-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} (the test failed)", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A fresh, empty directory for one test (see [`TempDir`]).
pub fn temp_dir(name: &str) -> TempDir {
    TempDir::new(name)
}

/// The service with its store in `dir`, on 127.0.0.1:0, adjusted by `tweak`.
async fn start(dir: &Path, tweak: impl FnOnce(&mut Config)) -> App {
    let mut config = Config::default();
    config.web.listen = "127.0.0.1:0".into();
    config.store.path = dir.to_owned();
    tweak(&mut config);
    config.validate().unwrap();
    stampede::app::start(config).await.unwrap()
}

/// The service started in-process for one test, with its store in a [`TempDir`] of its own.
///
/// [`TestApp::stop`] stops it (failing the test if stopping fails) and then removes the
/// directory. A drop cannot wait for the ordered shutdown: dropped while running (a failing test,
/// an early return), it only says so and removes the directory; the service's tasks end with the
/// test's runtime.
pub struct TestApp {
    /// Where it listens (the real port).
    pub addr: SocketAddr,
    app: Option<App>,
    dir: Option<TempDir>,
}

impl TestApp {
    /// Starts the service, adjusted by `tweak`, in a fresh directory named after `name`.
    pub async fn start(name: &str, tweak: impl FnOnce(&mut Config)) -> TestApp {
        TestApp::start_in(temp_dir(name), tweak).await
    }

    /// Starts the service, adjusted by `tweak`, with its store in `dir` (a test that prepares
    /// files there first).
    pub async fn start_in(dir: TempDir, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let app = start(&dir, tweak).await;
        TestApp {
            addr: app.addr,
            app: Some(app),
            dir: Some(dir),
        }
    }

    /// The running service (its ingest channel, say).
    pub fn app(&self) -> &App {
        self.app.as_ref().expect("running")
    }

    /// Its store directory.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("a directory")
    }

    /// Stops the service (ordered shutdown, every window flushed) and fails the test if that
    /// fails.
    async fn shut_down(&mut self) {
        if let Some(app) = self.app.take() {
            app.stop()
                .await
                .unwrap_or_else(|e| panic!("the service did not stop cleanly: {e:#}"));
        }
    }

    /// Stops the service, which must succeed, then removes its directory.
    pub async fn stop(mut self) {
        self.shut_down().await;
        self.dir = None;
    }

    /// Stops the service, which must succeed, and starts it again on the same store, adjusted
    /// by `tweak`.
    pub async fn restart(mut self, tweak: impl FnOnce(&mut Config)) -> TestApp {
        self.shut_down().await;
        let dir = self.dir.take().expect("a directory");
        TestApp::start_in(dir, tweak).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if self.app.is_some() && !std::thread::panicking() {
            eprintln!(
                "the service on {} was dropped without stop(): its shutdown was not checked",
                self.addr
            );
        }
    }
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
