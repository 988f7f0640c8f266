//! The service as an attacker and as a user meet it over HTTP (CONTRACT §5, "Browsers and
//! tokens"): cross-site writes and WebSockets refused, a rebinding `Host` refused, the read
//! token, CORS for an allowed origin, and HTTPS/WSS with `produce --to https://…`. The same in a
//! real browser is in `browser.rs`.

use futures_util::StreamExt;
use hyper::{Method, StatusCode};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

use crate::support::service::{get_json, line, request_with, temp_dir, TestApp};

fn reason(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap();
    v["error"].as_str().unwrap().to_owned()
}

fn record(name: &str) -> String {
    line(
        name,
        &stampede::time::format_status_time(stampede::time::now_ms()),
        1.0,
        150,
        150,
    )
}

/// Opens `/ws` with `headers` added; the handshake's status (101 when it opened) and the
/// subprotocol the server chose.
async fn ws_open(addr: std::net::SocketAddr, headers: &[(&str, &str)]) -> (u16, Option<String>) {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((mut ws, res)) => {
            let first = ws.next().await.unwrap().unwrap().into_text().unwrap();
            assert!(first.contains("\"snapshot\""), "{first}");
            let protocol = res
                .headers()
                .get("sec-websocket-protocol")
                .map(|p| p.to_str().unwrap().to_owned());
            (101, protocol)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => (res.status().as_u16(), None),
        Err(e) => panic!("{e}"),
    }
}

/// A page on another site posts telemetry as a "simple request" (`text/plain`, which browsers
/// send cross-site without a preflight): 403 with a reason, and nothing is ingested. The
/// service's own page and programs without `Origin` (curl, the producer) are served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_post_is_refused_and_ingests_nothing() {
    let app = TestApp::start("sec-origin", |_| {}).await;
    let evil = [
        ("origin", "http://evil.example"),
        ("content-type", "text/plain"),
    ];
    let (status, _, body) =
        request_with(app.addr, Method::POST, "/ingest", &evil, record("Evil")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let why = reason(&body);
    assert!(
        why.contains("http://evil.example") && why.contains("web.allowed_origins"),
        "{why}"
    );
    // Same origin (the dashboard) and no origin (programs) work.
    let own = format!("http://{}", app.addr);
    let (status, _, _) = request_with(
        app.addr,
        Method::POST,
        "/ingest",
        &[("origin", &own)],
        record("Own"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = request_with(app.addr, Method::POST, "/ingest", &[], record("Curl")).await;
    assert_eq!(status, StatusCode::OK);
    // A cross-site read of the page itself is no write: served (the browser's CORS rules keep
    // the other site from reading it).
    let (status, _, _) = request_with(app.addr, Method::GET, "/", &evil[..1], "").await;
    assert_eq!(status, StatusCode::OK);
    let fleet = crate::support::poll::eventually("two unicorns", || async {
        let v = get_json(app.addr, "/api/unicorns").await;
        (v.as_array()?.len() == 2).then_some(v)
    })
    .await;
    let names: Vec<&str> = fleet
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Curl", "Own"], "Evil was never ingested");
    app.stop().await;
}

/// Sends raw request bytes; the status code of the answer.
async fn raw_status(addr: std::net::SocketAddr, request: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut answer = vec![0u8; 256];
    let n = tcp.read(&mut answer).await.unwrap();
    let line = String::from_utf8_lossy(&answer[..n]).into_owned();
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

/// An `Origin` or `Host` that is not readable text (bytes above 0x7f) is never taken for a
/// missing one: refused like a foreign one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_origin_or_host_headers_are_refused() {
    let app = TestApp::start("sec-raw", |_| {}).await;
    let body = record("Raw");
    let request = |extra: &[u8]| {
        let mut r = format!(
            "POST /ingest HTTP/1.1\r\ncontent-length: {}\r\nconnection: close\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(extra);
        r.extend_from_slice(b"\r\n");
        r.extend_from_slice(body.as_bytes());
        r
    };
    let host = format!("host: {}\r\n", app.addr);
    let mut bad_origin = host.clone().into_bytes();
    bad_origin.extend_from_slice(b"origin: http://\xffevil.example\r\n");
    assert_eq!(raw_status(app.addr, &request(&bad_origin)).await, 403);
    assert_eq!(
        raw_status(app.addr, &request(b"host: \xffevil.example\r\n")).await,
        421
    );
    assert_eq!(raw_status(app.addr, &request(host.as_bytes())).await, 200);
    app.stop().await;
}

/// A foreign page opening the live feed gets 403 before any WebSocket exists; the dashboard's
/// own origin and programs without `Origin` open it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_websocket_is_refused() {
    let app = TestApp::start("sec-ws", |_| {}).await;
    assert_eq!(
        ws_open(app.addr, &[("origin", "http://evil.example")])
            .await
            .0,
        403
    );
    let own = format!("http://{}", app.addr);
    assert_eq!(ws_open(app.addr, &[("origin", &own)]).await.0, 101);
    assert_eq!(ws_open(app.addr, &[]).await.0, 101);
    app.stop().await;
}

/// DNS rebinding: bound to loopback, a request naming another host gets 421 with a reason;
/// loopback names pass, and so does a name listed in `web.allowed_hosts`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebinding_host_gets_421_and_loopback_names_pass() {
    let app = TestApp::start("sec-host", |c| {
        c.web.allowed_hosts = vec!["Stampede.LAN".into()]
    })
    .await;
    let port = app.addr.port();
    let evil = format!("evil.example:{port}");
    let (status, _, body) = request_with(
        app.addr,
        Method::GET,
        "/api/unicorns",
        &[("host", &evil)],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    assert!(reason(&body).contains("evil.example"), "{}", reason(&body));
    let (status, _, _) = request_with(
        app.addr,
        Method::POST,
        "/ingest",
        &[("host", &evil)],
        record("Rebound"),
    )
    .await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("stampede.lan:{port}"),
    ] {
        let (status, _, _) = request_with(
            app.addr,
            Method::GET,
            "/api/unicorns",
            &[("host", &host)],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{host}");
    }
    assert_eq!(
        get_json(app.addr, "/api/unicorns").await,
        Value::Array(vec![])
    );
    app.stop().await;
}

/// `web.read_token` guards the fleet's data — the API and `/ws`, where a browser sends it as a
/// subprotocol — but not the page shell (it must load to ask for the token) nor monitoring.
/// The admin token reads too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_token_guards_the_api_and_the_live_feed() {
    let app = TestApp::start("sec-read", |c| {
        c.web.read_token = "r3ad-0nly".into();
        c.web.token = "adm1n".into();
    })
    .await;
    let (status, headers, body) =
        request_with(app.addr, Method::GET, "/api/unicorns", &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        reason(&body).contains("web.read_token"),
        "{}",
        reason(&body)
    );
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    for (token, want) in [
        ("r3ad-0nly", StatusCode::OK),
        ("adm1n", StatusCode::OK),
        ("r3ad-0nlY", StatusCode::UNAUTHORIZED),
    ] {
        let auth = format!("Bearer {token}");
        let (status, _, _) = request_with(
            app.addr,
            Method::GET,
            "/api/summaries",
            &[("authorization", &auth)],
            "",
        )
        .await;
        assert_eq!(status, want, "{token}");
    }
    for open in ["/", "/dashboard.js", "/metrics", "/healthz", "/readyz"] {
        let (status, _, _) = request_with(app.addr, Method::GET, open, &[], "").await;
        assert!(
            status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
            "{open}: {status}"
        );
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{open}");
    }
    assert_eq!(ws_open(app.addr, &[]).await.0, 401);
    let hex: String = "r3ad-0nly".bytes().map(|b| format!("{b:02x}")).collect();
    let offered = format!("stampede, stampede.token.{hex}");
    assert_eq!(
        ws_open(app.addr, &[("sec-websocket-protocol", &offered)]).await,
        (101, Some("stampede".to_owned()))
    );
    assert_eq!(
        ws_open(app.addr, &[("authorization", "Bearer r3ad-0nly")])
            .await
            .0,
        101
    );
    let wrong = "stampede, stampede.token.6e6f7065".to_owned();
    assert_eq!(
        ws_open(app.addr, &[("sec-websocket-protocol", &wrong)])
            .await
            .0,
        401
    );
    app.stop().await;
}

/// A dashboard served elsewhere, from an origin in `web.allowed_origins`: its preflight is
/// answered, its writes and reads carry CORS headers; any other origin is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_origin_gets_cors_and_may_write() {
    let app = TestApp::start("sec-cors", |c| {
        c.web.allowed_origins = vec!["https://ops.example".into()]
    })
    .await;
    let ops = [("origin", "https://ops.example")];
    let (status, headers, _) = request_with(
        app.addr,
        Method::OPTIONS,
        "/api/summaries",
        &[
            ("origin", "https://ops.example"),
            ("access-control-request-headers", "authorization"),
        ],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://ops.example"
    );
    assert!(headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("authorization"));
    let (status, headers, _) =
        request_with(app.addr, Method::POST, "/ingest", &ops, record("Ops")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://ops.example"
    );
    let (status, _, _) = request_with(
        app.addr,
        Method::POST,
        "/ingest",
        &[("origin", "https://ops.example.evil")],
        record("X"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.stop().await;
}

/// A bad `allowed_origins` entry, or half a TLS configuration, fails at start naming the key.
#[test]
fn bad_security_settings_fail_at_start_naming_the_key() {
    let mut c = stampede::config::Config::default();
    c.web.allowed_origins = vec!["ops.example/dashboard".into()];
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("web.allowed_origins"), "{e}");
    let mut c = stampede::config::Config::default();
    c.web.tls_cert = "cert.pem".into();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("web.tls_key"), "{e}");
}

/// The test server certificate, its key, and the CA that signed it (tests/data/tls/README).
fn tls_files() -> (String, String, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
    let path = |f: &str| dir.join(f).display().to_string();
    (path("cert.pem"), path("key.pem"), path("ca.pem"))
}

/// With a certificate and key, the one port speaks HTTPS and WSS: `stampede produce --to
/// https://…` delivers (trusting the certificate through `SSL_CERT_FILE`), a WSS client gets
/// the live feed, and plain HTTP on that port gets no answer. A key that does not load is a
/// config error at start, naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_on_one_port_and_produce_delivers_over_https() {
    let (cert, key, ca) = tls_files();
    let dir = temp_dir("sec-tls");
    let bad = {
        let mut c = stampede::config::Config::default();
        c.web.listen = "127.0.0.1:0".into();
        c.store.path = dir.join("bad");
        c.web.tls_cert = cert.clone();
        c.web.tls_key = cert.clone();
        stampede::app::start(c).await.err().unwrap()
    };
    // A config error (exit status 2), naming the key.
    assert!(bad.is::<stampede::config::ConfigError>(), "{bad:#}");
    assert!(bad.to_string().contains("web.tls_key"), "{bad}");
    let app = TestApp::start_in(dir, |c| {
        c.web.tls_cert = cert.clone();
        c.web.tls_key = key.clone();
    })
    .await;
    let port = app.addr.port();
    let to = format!("https://localhost:{port}/ingest");
    let produce = |ssl_cert_file: String| {
        let to = to.clone();
        tokio::task::spawn_blocking(move || {
            crate::support::process::stampede([
                "produce",
                "--unicorns",
                "3",
                "--msgs",
                "30",
                "--rate",
                "max",
                "--quiet",
            ])
            .args(["--to", &to])
            .env("SSL_CERT_FILE", ssl_cert_file)
            .output()
            .unwrap()
        })
    };
    // Not trusting the service's CA: a clear error at once, not a minute of retries.
    let out = produce(cert.clone()).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("not trusted") && stderr.contains("SSL_CERT_FILE"),
        "{stderr}"
    );
    let out = produce(ca.clone()).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // WSS: TLS by hand (tokio-rustls, trusting the test certificate), then the WebSocket.
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://localhost:{port}/ws"), stream)
        .await
        .unwrap();
    let snapshot: Value =
        serde_json::from_str(&ws.next().await.unwrap().unwrap().into_text().unwrap()).unwrap();
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(
        snapshot["unicorns"].as_array().unwrap().len(),
        3,
        "produce's 3 unicorns"
    );

    // Plain HTTP on the TLS port is not served.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let plain = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        client.get(format!("http://127.0.0.1:{port}/healthz").parse().unwrap()),
    )
    .await
    .unwrap();
    assert!(plain.is_err(), "plain HTTP was answered on the HTTPS port");
    app.stop().await;
}
