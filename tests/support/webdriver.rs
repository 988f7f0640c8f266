//! A minimal W3C WebDriver client for driving headless Chromium through chromedriver (Debian's
//! `chromium` and `chromium-driver`, installed by scripts/test). Fails loudly when they are
//! missing: browser tests never skip.

use std::process::{Child, Command, Stdio};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

// The tests' one way of waiting (`support::poll`), loaded here because
// `examples/dashboard_load.rs` includes this file on its own, without the rest of `support`.
#[path = "poll.rs"]
pub mod poll;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver process and one browser session. [`Browser::quit`] ends the session (and so
/// the browser); dropping it without that kills chromedriver's whole process group, browser
/// included, so that no Chromium outlives a test.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    profile: std::path::PathBuf,
}

async fn call(method: Method, url: &str, body: Option<Value>) -> Value {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    let res = client
        .request(req)
        .await
        .unwrap_or_else(|e| panic!("webdriver {url}: {e}"));
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if let Some(err) = v["value"]["error"].as_str() {
        panic!("webdriver {url}: {err}: {}", v["value"]["message"]);
    }
    v["value"].clone()
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session.
    pub async fn start() -> Browser {
        for (path, package) in [(CHROMEDRIVER, "chromium-driver"), (CHROMIUM, "chromium")] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: the browser tests need Debian's {package} (scripts/test installs it: apt-get install chromium chromium-driver)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = {
            use std::os::unix::process::CommandExt;
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own process group: the browsers it starts can be ended with it.
                .process_group(0)
                .spawn()
                .expect("start chromedriver")
        };
        let base = format!("http://127.0.0.1:{port}");
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let status: hyper::Uri = format!("{base}/status").parse().unwrap();
        poll::eventually("chromedriver to start", || {
            let (client, status) = (client.clone(), status.clone());
            async move { client.get(status).await.ok().map(drop) }
        })
        .await;
        let profile =
            std::env::temp_dir().join(format!("stampede-chromium-{}-{port}", std::process::id()));
        // Insecure certificates accepted: the TLS test's CA is not in the browser's store.
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--window-size=1400,900",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let session = call(Method::POST, &format!("{base}/session"), Some(caps)).await;
        let session = session["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        Browser {
            driver,
            base,
            session,
            profile,
        }
    }

    /// Ends the session: chromedriver closes the browser.
    pub async fn quit(self) {
        call(
            Method::DELETE,
            &format!("{}/session/{}", self.base, self.session),
            None,
        )
        .await;
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.base, self.session)
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        call(Method::POST, &self.url("/url"), Some(json!({ "url": url }))).await;
    }

    /// Runs `script` (a function body; `arguments` available) and returns its result.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        call(
            Method::POST,
            &self.url("/execute/sync"),
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Evaluates `script` until it returns something truthy; fails after the default
    /// [`TIMEOUT`](poll::TIMEOUT) saying `what`.
    pub async fn until(&self, what: &str, script: &str, args: Value) -> Value {
        poll::eventually(&format!("until {what}"), || {
            let args = args.clone();
            async move {
                let v = self.eval(script, args).await;
                (!(v.is_null() || v == Value::Bool(false))).then_some(v)
            }
        })
        .await
    }

    /// A real mouse click at viewport coordinates.
    pub async fn click_at(&self, x: f64, y: f64) {
        let actions = json!({"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
        "actions": [
            {"type": "pointerMove", "duration": 0, "origin": "viewport", "x": x.round() as i64, "y": y.round() as i64},
            {"type": "pointerDown", "button": 0},
            {"type": "pointerUp", "button": 0}
        ]}]});
        call(Method::POST, &self.url("/actions"), Some(actions)).await;
    }

    /// A PNG screenshot of the page.
    pub async fn screenshot(&self) -> Vec<u8> {
        let v = call(Method::GET, &self.url("/screenshot"), None).await;
        base64_decode(v.as_str().unwrap_or_default())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and any browser it still runs.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Standard base64, enough for a screenshot.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
