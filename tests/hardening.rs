//! What an attacker with access to the API must never achieve (issue 21): kill the service,
//! exhaust its memory, or keep it busy for nobody.

use std::io::Write as _;

use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::support::poll::eventually;
use crate::support::service::{request, TestApp};

/// The query workers this test process has started that are still running.
fn workers() -> Vec<u32> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // The parent is the fourth field, after the command in parentheses.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let is_worker = cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == b"__query-worker");
        if is_worker && parent == Some(me) {
            found.push(pid);
        }
    }
    found
}

async fn query(addr: std::net::SocketAddr, sql: &str) -> (StatusCode, Value) {
    let (status, body) = request(addr, Method::POST, "/api/query", sql.to_owned(), None).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A deeply nested expression, a scalar function asked for gigabytes, and an answer of
/// hundreds of megabytes each get a clear refusal; the service answers on, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_query_never_takes_the_service_down() {
    let app = TestApp::start("hard-query", |_| {}).await;
    let addr = app.addr;
    let healthy = || async move {
        let (status, _) = request(addr, Method::GET, "/healthz", "", None).await;
        assert_eq!(status, StatusCode::OK, "the service still answers");
    };

    // 1,000 terms: thread stacks overflowed on it.
    let chain = format!("SELECT 1{} AS x", "+1".repeat(1_000));
    let (status, v) = query(addr, &chain).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("nests deeper"), "{v}");
    healthy().await;
    // A reasonable depth still runs.
    let (status, v) = query(addr, &format!("SELECT 1{} AS x", "+1".repeat(20))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["rows"][0]["x"], 21);

    // 1.5 GB from one scalar function: past what a query may use.
    let (status, v) = query(addr, "SELECT length(repeat('x', 1500000000)) AS n").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"].as_str().unwrap().contains("stopped"), "{v}");
    healthy().await;

    // Rows are capped (10,000), and so are bytes: 10,000 rows of 10 kB are 100 MB.
    let (status, v) = query(
        addr,
        "SELECT repeat('x', 10000) AS s FROM generate_series(1, 10000)",
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].as_str().unwrap().contains("64 MiB"), "{v}");
    healthy().await;
    // And the JSON it would make is counted too: 60 MB of control characters as Arrow are
    // 360 MB escaped (\u0001).
    let (status, v) = query(
        addr,
        "SELECT repeat(chr(1), 6000) AS s FROM generate_series(1, 10000)",
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].as_str().unwrap().contains("as JSON"), "{v}");
    healthy().await;
    // One value of 300 MB is refused too: by its memory or by its size, whichever comes first.
    let (status, v) = query(addr, "SELECT repeat('x', 300000000) AS s").await;
    assert!(
        [
            StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::UNPROCESSABLE_ENTITY
        ]
        .contains(&status),
        "{status} {v}"
    );
    healthy().await;

    assert!(workers().is_empty(), "no worker outlives its query");
    app.stop().await;
}

/// A client that hangs up takes its query with it: the worker is killed and the next query is
/// taken at once (before, three abandoned queries kept both cores busy while a fourth ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_whose_client_hangs_up_stops() {
    let app = TestApp::start("hangup-query", |_| {}).await;
    let addr = app.addr;
    let sql = "SELECT count(*) AS n FROM generate_series(1, 100000000000)";
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    write!(
        socket,
        "POST /api/query HTTP/1.1\r\nhost: {addr}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{sql}",
        sql.len()
    )
    .unwrap();
    eventually("the slow query's worker", || async {
        (!workers().is_empty()).then_some(())
    })
    .await;
    // While it runs, a second query waits its turn, told when to try again.
    let (status, headers, body) = crate::support::service::request_with(
        addr,
        Method::POST,
        "/api/query",
        &[],
        "SELECT 1 AS x",
    )
    .await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    drop(socket);
    eventually("the worker killed", || async {
        workers().is_empty().then_some(())
    })
    .await;
    let (status, v) = query(addr, "SELECT 1 AS x").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    app.stop().await;
}

/// A live record dated before 1970 is `out_of_range` (it was accepted while no watermark
/// existed, and once archived failed every query that read `statustime`); an archive that
/// already holds one (kept by an older version) still answers, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_from_year_1000_is_refused_live_and_cannot_poison_the_archive() {
    use crate::support::service::{line, post_json, temp_dir};
    let app = TestApp::start("year-1000", |_| {}).await;
    let body = format!(
        "{}\n{}",
        line("Ancient", "1000-01-01 00:00:00", 1.0, 150, 150),
        line("Bucephalus", "2018-03-18 03:20:00", 1.0, 150, 150)
    );
    let (status, reply) = post_json(app.addr, "/ingest", body, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (reply["accepted"].as_u64(), reply["rejected"].as_u64()),
        (Some(1), Some(1)),
        "{reply}"
    );
    assert_eq!(reply["errors"][0]["reason"], "out_of_range");
    assert_eq!(reply["errors"][0]["field"], "StatusTime");
    app.stop().await;

    // An archive written before this rule: the old record reads back with the others.
    let archive = temp_dir("year-1000-archive");
    let hour = archive.join("2026/01/01/00");
    std::fs::create_dir_all(&hour).unwrap();
    std::fs::write(
        hour.join("wildrydes-1-2026-01-01-00-00-00-old"),
        format!(
            "{}\n{}\n",
            line("Ancient", "1000-01-01 00:00:00", 1.0, 150, 150),
            line("Bucephalus", "2018-03-18T04:20:00+01:00", 1.0, 150, 150)
        ),
    )
    .unwrap();
    let out = crate::support::process::stampede_ok(&[
        "query",
        "--archive",
        archive.to_str().unwrap(),
        "--format",
        "csv",
        "SELECT name, statustime FROM wildrydes ORDER BY statustime",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "name,statustime\r\nAncient,1000-01-01 00:00:00.000\r\nBucephalus,2018-03-18 03:20:00.000\r\n"
    );
}

/// A client that sends half a request and stalls is disconnected after the header timeout
/// (before, plain HTTP had none: 300 of them took every file descriptor), and so is one that
/// connects and says nothing; a prompt client is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_are_disconnected_after_the_header_timeout() {
    use std::io::Read as _;
    let app = TestApp::start("slowloris", |_| {}).await;
    let addr = app.addr;
    let started = std::time::Instant::now();
    let mut half = std::net::TcpStream::connect(addr).unwrap();
    write!(half, "POST /ingest HTTP/1.1\r\nhost: {addr}\r\ncontent-le").unwrap();
    let mut silent = std::net::TcpStream::connect(addr).unwrap();
    // Bounded too: a server that never closes them fails the test below, and the reads end.
    for socket in [&half, &silent] {
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
    }
    let (status, _) = request(addr, Method::GET, "/healthz", "", None).await;
    assert_eq!(status, StatusCode::OK);
    let closed = tokio::task::spawn_blocking(move || {
        let mut rest = Vec::new();
        // Both reads end (EOF or a reset) when the server closes; they would block otherwise.
        let _ = half.read_to_end(&mut rest);
        let _ = silent.read_to_end(&mut rest);
        started.elapsed()
    });
    let waited = tokio::time::timeout(std::time::Duration::from_secs(30), closed)
        .await
        .expect("the stalled connections were closed")
        .unwrap();
    assert!(
        waited >= stampede::web::server::HEADER_TIMEOUT / 2,
        "closed after {waited:?}: not before the timeout"
    );
    app.stop().await;
}

/// A flood of alert changes (an ingest client sending thousands of unicorns under the
/// threshold) cannot silence a real alert: before, all of a round's changes went into one mail,
/// which the server refused for its size, and the round was dropped with the real alert in it.
/// Now a mail carries at most 1,000 changes, and one the server refuses is split in halves and
/// sent again: here a server that takes 200 kB a message gets every change, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_alert_changes_never_silences_the_real_one() {
    use crate::alerts::{alert_ids, at, confirm_by_mail_in, id, once, subscribe, unique_address};
    use crate::support::mail::{mails_in, PrivateSmtp};
    use crate::support::poll::{wait_until_within, LONG};
    use crate::support::service::{line, temp_dir};
    let dir = temp_dir("alert-flood");
    let smtp = PrivateSmtp::start(&dir, 200_000);
    let server = smtp.addr.clone();
    let app = TestApp::start("alert-flood-app", |c| {
        c.alerts.smtp.server = format!("smtp://{server}");
        c.alerts.group_interval_secs = 1;
    })
    .await;
    let addr = app.addr;
    let ops = unique_address("flood");
    let (status, _) = subscribe(addr, serde_json::json!({"email": ops})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    confirm_by_mail_in(&smtp.maildir, addr, &ops).await;
    // 3,000 unicorns cross at once, then the one that matters.
    let mut want = Vec::new();
    for batch in 0..3 {
        let lines: Vec<String> = (0..1_000)
            .map(|i| {
                let name = format!("flood{:04}", batch * 1_000 + i);
                want.push(id("low-health", &name, 7));
                line(&name, &at(7), 1.0, 42, 150)
            })
            .collect();
        let (status, _) = request(addr, Method::POST, "/ingest", lines.join("\n"), None).await;
        assert_eq!(status, StatusCode::OK);
    }
    want.push(id("low-magic", "RealOne", 8));
    let real = line("RealOne", &at(8), 1.0, 150, 3);
    let (status, _) = request(addr, Method::POST, "/ingest", real, None).await;
    assert_eq!(status, StatusCode::OK);
    let maildir = smtp.maildir.clone();
    let to = ops.clone();
    let mails = tokio::task::spawn_blocking(move || {
        let mut mails = Vec::new();
        wait_until_within(LONG, "every change mailed", || {
            mails = mails_in(&maildir, &to);
            alert_ids(&mails).len() == 3_001
        });
        mails
    })
    .await
    .unwrap();
    assert_eq!(alert_ids(&mails), once(&want), "every change, once");
    let alert_mails = mails.iter().filter(|m| !m.alert_ids().is_empty()).count();
    assert!(
        alert_mails > 3,
        "split below the server's size: {alert_mails} mails"
    );
    app.stop().await;
}

/// A body of millions of tiny bad records is refused whole: before, 8 MB of `[0,0,…]` made
/// 4 million dead letters in a second and stalled shutdown behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn millions_of_tiny_records_in_one_request_are_refused_whole() {
    let app = TestApp::start("tiny-flood", |_| {}).await;
    let mut body = String::with_capacity(8 << 20);
    body.push('[');
    body.push_str(&"0,".repeat(3_000_000));
    body.push_str("0]");
    let (status, reply) = request(app.addr, Method::POST, "/ingest", body, None).await;
    let reply = String::from_utf8_lossy(&reply);
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{reply}");
    assert!(reply.contains("at most 100000"), "{reply}");
    let ndjson = "0\n".repeat(200_000);
    let (status, _) = request(app.addr, Method::POST, "/ingest", ndjson, None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let dead = crate::support::service::get_json(app.addr, "/api/dead-letters").await;
    assert_eq!(dead, serde_json::json!([]), "nothing was taken in");
    app.stop().await;
}

/// A body that stops arriving is given up after the body timeout with 408 (before, 20 stalled
/// 8 MB bodies held 160 MB and their connections for as long as their clients liked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_after_the_body_timeout() {
    use std::io::Read as _;
    let app = TestApp::start("stalled-body", |_| {}).await;
    let addr = app.addr;
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    write!(
        socket,
        "POST /ingest HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/x-ndjson\r\ncontent-length: 1000000\r\n\r\n{{\"Name\":\"Sha"
    )
    .unwrap();
    let started = std::time::Instant::now();
    let reply = tokio::task::spawn_blocking(move || {
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(90)))
            .unwrap();
        let mut reply = [0u8; 12];
        socket.read_exact(&mut reply).map(|()| reply)
    })
    .await
    .unwrap()
    .expect("an answer before the read timeout");
    assert_eq!(
        &reply,
        b"HTTP/1.1 408",
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(started.elapsed() >= stampede::web::server::BODY_TIMEOUT / 2);
    app.stop().await;
}

/// One address holds at most a quarter of the WebSocket slots: before, one client could take
/// every one and lock the dashboards out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_websocket_slot() {
    let app = TestApp::start("ws-share", |c| c.web.max_ws_clients = 100).await;
    let url = format!("ws://{}/ws", app.addr);
    let mut held = Vec::new();
    for _ in 0..25 {
        let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        held.push(ws);
    }
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers().get("retry-after").unwrap(), "5");
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert!(
                body["error"].as_str().unwrap().contains("from one address"),
                "{body}"
            );
        }
        other => panic!("expected 503, got {:?}", other.map(|(_, r)| r.status())),
    }
    // A slot given back is the address's again.
    let mut first = held.remove(0);
    first.close(None).await.unwrap();
    drop(first);
    let again = eventually("a slot given back", || async {
        tokio_tungstenite::connect_async(&url)
            .await
            .ok()
            .map(|(ws, _)| ws)
    })
    .await;
    drop((again, held));
    app.stop().await;
}
