//! The live service, started for real on port 0 through the same `app::start` as `main`:
//! ingest, the API, the WebSocket feed, the store across restarts, bad input, limits, auth, and
//! a slow browser that must not hold anyone up.

use std::time::Duration;

use futures_util::StreamExt;
use hyper::{Method, StatusCode};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::support::poll::eventually;
use crate::support::service::{get_json, line, post_json, request, temp_dir, TestApp};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(addr: std::net::SocketAddr) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    ws
}

/// The next JSON text frame (fails after 10 s).
async fn next_frame(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("stream open")
            .expect("frame");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// Frames until one satisfies `want`.
async fn frame_where(ws: &mut Ws, want: impl Fn(&Value) -> bool) -> Value {
    loop {
        let f = next_frame(ws).await;
        if want(&f) {
            return f;
        }
    }
}

/// One minute of Shadowfax (03:20:00 … 03:20:59, Distance 1.5, vitals 100+i / 200−i) and ten
/// seconds of the next, which puts the watermark at 03:21:05 and closes the first minute.
fn minute_and_a_bit() -> String {
    (0..70)
        .map(|i| {
            line(
                "Shadowfax",
                &format!("2018-03-18 03:{:02}:{:02}", 20 + i / 60, i % 60),
                1.5,
                100 + i,
                200 - i,
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_summary_of(f: &Value, name: &str, start: &str) -> bool {
    f["type"] == "summary" && f["summary"]["Name"] == name && f["summary"]["StatusTime"] == start
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_gives_summaries_over_the_api_and_the_websocket() {
    let app = TestApp::start("ingest", |_| {}).await;
    let addr = app.addr;
    let mut ws = ws_connect(addr).await;
    let snapshot = next_frame(&mut ws).await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["unicorns"], Value::Array(vec![]));

    let (status, reply) = post_json(addr, "/ingest", minute_and_a_bit(), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        reply,
        serde_json::json!({"accepted": 70, "rejected": 0, "errors": []})
    );

    // Computed by hand: 60 records of 1.5 m; health 100..159, magic 141..200.
    let expected = serde_json::json!({
        "Name": "Shadowfax", "StatusTime": "2018-03-18 03:20:00.000", "WindowEnd": "2018-03-18 03:21:00.000",
        "Distance": 90.0, "MinMagicPoints": 141, "MaxMagicPoints": 200, "MinHealthPoints": 100,
        "MaxHealthPoints": 159, "Records": 60, "Revision": 0
    });
    // The summary goes out as soon as the minute closes, the telemetry frame within 100 ms.
    let (mut telemetry, mut summary) = (None, None);
    while telemetry.is_none() || summary.is_none() {
        let f = next_frame(&mut ws).await;
        if f["type"] == "telemetry" {
            telemetry = Some(f);
        } else if is_summary_of(&f, "Shadowfax", "2018-03-18 03:20:00.000") {
            summary = Some(f);
        }
    }
    let (telemetry, summary) = (telemetry.unwrap(), summary.unwrap());
    let last = &telemetry["records"][0];
    assert_eq!(last["Name"], "Shadowfax");
    assert_eq!(
        last["StatusTime"], "2018-03-18 03:21:09.000",
        "the latest record by event time"
    );
    assert!(last["LastSeen"].is_string());
    assert_eq!(summary["summary"], expected);

    let stored = eventually("the summary in the store", || async {
        let v = get_json(addr, "/api/summaries?name=Shadowfax").await;
        (v.as_array()?.len() == 1).then_some(v)
    })
    .await;
    assert_eq!(stored[0], expected);
    let unicorns = get_json(addr, "/api/unicorns").await;
    assert_eq!(unicorns[0]["Name"], "Shadowfax");
    assert_eq!(unicorns[0]["HealthPoints"], 169);

    // A late record restates the minute over the WebSocket too.
    let late = line("Shadowfax", "2018-03-18 03:20:30", 10.0, 1, 500);
    let (_, reply) = post_json(addr, "/ingest", late, None).await;
    assert_eq!(reply["accepted"], 1);
    let restated = frame_where(&mut ws, |f| {
        is_summary_of(f, "Shadowfax", "2018-03-18 03:20:00.000")
    })
    .await;
    assert_eq!(restated["summary"]["Revision"], 1);
    assert_eq!(restated["summary"]["Records"], 61);
    assert_eq!(restated["summary"]["Distance"], 100.0);
    assert_eq!(restated["summary"]["MinHealthPoints"], 1);

    let metrics =
        String::from_utf8(request(addr, Method::GET, "/metrics", "", None).await.1).unwrap();
    // The one late record, counted: a metric that can be wrong, not only present.
    assert_eq!(
        metric_value(&metrics, "stampede_records_late_total"),
        Some(1),
        "{metrics}"
    );
    // The stored minute counted once in the closed → stored latency (the restatement not).
    eventually("the closed → stored latency counted", || async {
        let metrics =
            String::from_utf8(request(addr, Method::GET, "/metrics", "", None).await.1).unwrap();
        metrics
            .contains("stampede_window_store_latency_seconds_count 1\n")
            .then_some(())
    })
    .await;
    app.stop().await;
    // Closing the WebSocket on shutdown.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the socket was closed on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_summaries_and_shutdown_flushes_open_windows() {
    let app = TestApp::start("restart", |_| {}).await;
    let (status, _) = post_json(app.addr, "/ingest", minute_and_a_bit(), None).await;
    assert_eq!(status, StatusCode::OK);
    let app = app.restart(|_| {}).await;
    let stored = get_json(app.addr, "/api/summaries?name=Shadowfax").await;
    let minutes: Vec<(&str, u64)> = stored
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["StatusTime"].as_str().unwrap(),
                s["Records"].as_u64().unwrap(),
            )
        })
        .collect();
    // Newest first; 03:21 was still open when the first instance stopped and was flushed.
    assert_eq!(
        minutes,
        vec![
            ("2018-03-18 03:21:00.000", 10),
            ("2018-03-18 03:20:00.000", 60)
        ]
    );
    let ranged = get_json(
        app.addr,
        "/api/summaries?from=2018-03-18%2003:21:00&limit=5",
    )
    .await;
    assert_eq!(ranged.as_array().unwrap().len(), 1);
    let (status, body) = request(
        app.addr,
        Method::GET,
        "/api/summaries?from=yesterday",
        "",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("from="));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_with_its_reason_counted_and_dead_lettered() {
    let app = TestApp::start("bad-input", |_| {}).await;
    let addr = app.addr;
    let good = line("Bucephalus", "2018-03-18 03:20:01", 1.0, 1, 1);
    let pad = format!("{{\"Pad\":\"{}\"}}", "x".repeat(70_000));
    let body = format!(
        "[{good},\n{{\"Name\":\"x\"}},\n\"just a string\",\n{},\n{},\n{},\n{{\"Name\":\"\",\"StatusTime\":\"2018-03-18 03:20:01\",\"Latitude\":0,\"Longitude\":0,\"Distance\":0,\"HealthPoints\":0,\"MagicPoints\":0}},\n{},\n{}]",
        line("Bucephalus", "2018-03-18 03:20:02", 1.0, 1, 1).replace("\"Distance\":1", "\"Distance\":\"1\""),
        line("Bucephalus", "2018-03-18 03:20:03", 1.0, 1, 1).replace("40.75", "91"),
        line("Bucephalus", "2018-03-18 03:20:04", 1.0, 1, 1).replace("03:20:04", "03:61:04"),
        pad,
        line("Bucephalus", "2018-03-18 03:20:05", 1.0, 1, 1),
    );
    let (status, reply) = post_json(addr, "/ingest", body, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["accepted"], 2);
    assert_eq!(reply["rejected"], 7);
    let errors: Vec<(u64, &str, Option<&str>)> = reply["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().unwrap(),
                e["reason"].as_str().unwrap(),
                e["field"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        vec![
            (1, "missing_field", Some("StatusTime")),
            (2, "bad_type", None),
            (3, "bad_type", Some("Distance")),
            (4, "out_of_range", Some("Latitude")),
            (5, "out_of_range", Some("StatusTime")),
            (6, "out_of_range", Some("Name")),
            (7, "too_large", None),
        ]
    );

    // NDJSON: blank lines are not records; indexes count records; too late and malformed too.
    let ndjson = format!(
        "{}\n\n{}\n{{not json\n{}\n",
        line("Bucephalus", "2018-03-18 03:25:00", 1.0, 1, 1),
        line("Bucephalus", "2018-03-18 03:10:00", 1.0, 1, 1),
        line("Bucephalus", "2018-03-18 03:25:01", 1.0, 1, 1),
    );
    let (_, reply) = post_json(addr, "/ingest", ndjson, None).await;
    assert_eq!(reply["accepted"], 2);
    assert_eq!(
        reply["errors"],
        serde_json::json!([{"index": 1, "reason": "too_late"}, {"index": 2, "reason": "malformed_json"}])
    );

    // A body that starts like an array but is not one is one malformed record.
    let (_, reply) = post_json(addr, "/ingest", "[1, 2", None).await;
    assert_eq!(
        reply,
        serde_json::json!({"accepted": 0, "rejected": 1, "errors": [{"index": 0, "reason": "malformed_json"}]})
    );
    let (_, reply) = post_json(addr, "/ingest", "", None).await;
    assert_eq!(
        reply,
        serde_json::json!({"accepted": 0, "rejected": 0, "errors": []})
    );

    let dead = eventually("ten dead letters", || async {
        let v = get_json(addr, "/api/dead-letters?limit=50").await;
        (v.as_array()?.len() == 10).then_some(v)
    })
    .await;
    assert_eq!(dead[0]["raw"], "[1, 2");
    assert_eq!(dead[0]["reason"], "malformed_json");
    assert_eq!(dead[0]["origin"]["source"], "http");
    let too_large = dead
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["reason"] == "too_large")
        .unwrap();
    assert_eq!(
        too_large["raw"].as_str().unwrap().len(),
        64 * 1024,
        "raw bytes cut at 64 KiB"
    );
    let metrics =
        String::from_utf8(request(addr, Method::GET, "/metrics", "", None).await.1).unwrap();
    // Each reason counted as often as this test's records gave it (the ten dead letters).
    for (reason, n) in [
        ("malformed_json", 2),
        ("missing_field", 1),
        ("bad_type", 2),
        ("out_of_range", 3),
        ("too_large", 1),
        ("too_late", 1),
    ] {
        let name = format!("stampede_records_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(metric_value(&metrics, &name), Some(n), "{name}: {metrics}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413_and_the_token_guards_ingest_and_admin() {
    let app = TestApp::start("limits", |c| {
        c.web.max_body_bytes = 4_096;
        c.web.token = "s3cret".into();
    })
    .await;
    let addr = app.addr;
    let small = line("Shadowfax", "2018-03-18 03:20:01", 1.0, 1, 1);
    let (status, _) = post_json(addr, "/ingest", small.clone(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = post_json(addr, "/ingest", small.clone(), Some("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, reply) = post_json(addr, "/ingest", small.clone(), Some("s3cret")).await;
    assert_eq!(
        (status, reply["accepted"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    let big = vec![small; 40].join("\n");
    let (status, reply) = post_json(addr, "/ingest", big, Some("s3cret")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(reply["error"]
        .as_str()
        .unwrap()
        .contains("web.max_body_bytes"));
    let (status, _) = request(addr, Method::GET, "/api/dead-letters", "", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = request(addr, Method::GET, "/api/dead-letters", "", Some("s3cret")).await;
    assert_eq!(status, StatusCode::OK);
    for open in [
        "/api/summaries",
        "/healthz",
        "/readyz",
        "/",
        "/api/unicorns",
    ] {
        let (status, _) = request(addr, Method::GET, open, "", None).await;
        assert_eq!(status, StatusCode::OK, "{open}");
    }
    app.stop().await;
}

/// A raw WebSocket whose reader stops reading: small receive buffer, so the server's writes to
/// it block soon.
async fn stalled_client(addr: std::net::SocketAddr) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4_096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(
        format!("ws://{addr}/ws"),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_resynced_while_a_healthy_one_gets_everything() {
    // 1 MiB of frames per client: the healthy one never gets near it, the stalled one soon does.
    let app = TestApp::start("stalled", |c| c.web.ws_queue_bytes = 1 << 20).await;
    let addr = app.addr;
    let mut healthy = ws_connect(addr).await;
    assert_eq!(next_frame(&mut healthy).await["type"], "snapshot");
    let mut stalled = stalled_client(addr).await;
    assert_eq!(next_frame(&mut stalled).await["type"], "snapshot");

    // The healthy client reads everything into a list while the test feeds the service.
    let reader = tokio::spawn(async move {
        let mut frames = Vec::new();
        loop {
            let f = next_frame(&mut healthy).await;
            let done = f["type"] == "summary" && f["summary"]["Name"] == "done";
            frames.push(f);
            if done {
                return frames;
            }
        }
    });
    // 1,500 unicorns over 4 minutes, one record each per 10 s: big telemetry frames (they fill
    // the stalled client's socket) and 1,500 summaries per closed minute.
    let unicorns = 1_500;
    for step in 0..24 {
        let t = format!("2018-03-18 03:{:02}:{:02}", 20 + step / 6, (step % 6) * 10);
        let body: Vec<String> = (0..unicorns)
            .map(|u| line(&format!("u{u:04}"), &t, 1.0, 1, 1))
            .collect();
        let (status, _) = post_json(addr, "/ingest", body.join("\n"), None).await;
        assert_eq!(status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(110)).await; // one telemetry frame per batch
    }
    // A marker minute that closes after everything else.
    let marker = format!(
        "{}\n{}",
        line("done", "2018-03-18 03:30:00", 1.0, 1, 1),
        line("done", "2018-03-18 03:31:10", 1.0, 1, 1)
    );
    post_json(addr, "/ingest", marker, None).await;
    let frames = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("healthy client kept up")
        .unwrap();

    let snapshots = frames.iter().filter(|f| f["type"] == "snapshot").count();
    assert_eq!(snapshots, 0, "the healthy client was never resynchronised");
    let summaries: std::collections::BTreeSet<(String, String)> = frames
        .iter()
        .filter(|f| f["type"] == "summary")
        .map(|f| {
            (
                f["summary"]["Name"].as_str().unwrap().to_owned(),
                f["summary"]["StatusTime"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // Minutes 03:20 … 03:23 of every unicorn closed (the watermark passed 03:24 with the marker),
    // plus the marker's first minute.
    assert_eq!(
        summaries.len(),
        unicorns * 4 + 1,
        "every summary reached the healthy client"
    );

    // The stalled client, reading again, is brought back with a fresh snapshot.
    let resync = tokio::time::timeout(
        Duration::from_secs(20),
        frame_where(&mut stalled, |f| f["type"] == "snapshot"),
    )
    .await;
    let resync = resync.expect("a resync snapshot");
    assert_eq!(resync["unicorns"].as_array().unwrap().len(), unicorns + 1);
    let metrics =
        String::from_utf8(request(addr, Method::GET, "/metrics", "", None).await.1).unwrap();
    let resyncs: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("stampede_ws_resyncs_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(resyncs >= 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_source_is_its_own_partition_and_flushes_at_its_end() {
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let input = golden.join("late_and_too_late.input.ndjson");
    let app = TestApp::start("file-source", |c| {
        c.source.kind = stampede::config::SourceKind::File;
        c.source.path = input.display().to_string();
    })
    .await;
    let expected: Vec<Value> =
        std::fs::read_to_string(golden.join("late_and_too_late.expected.ndjson"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let mut stored = eventually("the file's summaries, flushed at its end", || async {
        let v = get_json(app.addr, "/api/summaries").await;
        (v.as_array()?.len() == expected.len()).then_some(v)
    })
    .await;
    stored.as_array_mut().unwrap().reverse(); // newest first → file order
    assert_eq!(stored, Value::Array(expected));
    let dead = get_json(app.addr, "/api/dead-letters").await;
    assert_eq!(dead[0]["reason"], "too_late");
    assert_eq!(dead[0]["origin"]["source"], "file");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_fleet_still_closes_its_windows() {
    // 1 s windows, no out-of-orderness, 1 s idle timeout: the last window cannot close on event
    // time (nothing newer arrives); only the wall clock can close it.
    let app = TestApp::start("idle", |c| {
        c.window.size_secs = 1;
        c.window.out_of_orderness_secs = 0;
        c.window.idle_timeout_secs = 1;
    })
    .await;
    let mut ws = ws_connect(app.addr).await;
    assert_eq!(next_frame(&mut ws).await["type"], "snapshot");
    let body = ["2018-03-18 03:20:00.100", "2018-03-18 03:20:00.500"]
        .map(|t| line("Arion", t, 2.5, 1, 1))
        .join("\n");
    let (_, reply) = post_json(app.addr, "/ingest", body, None).await;
    assert_eq!(reply["accepted"], 2);
    let started = std::time::Instant::now();
    let closed = frame_where(&mut ws, |f| {
        is_summary_of(f, "Arion", "2018-03-18 03:20:00.000")
    })
    .await;
    assert_eq!(closed["summary"]["Records"], 2);
    assert_eq!(closed["summary"]["Distance"], 5.0);
    // Watermark 03:20:00.500; idle after 1 s, then 0.5 s of wall clock to reach the window end.
    assert!(
        started.elapsed() >= Duration::from_millis(1_300),
        "closed by the idle timeout, not before"
    );
    app.stop().await;
}

/// One clock-skewed record, years ahead, is rejected as `too_early` (with its field), counted
/// and dead-lettered, and moves nothing: the fleet's next records are accepted. Before, it moved
/// the partition's watermark years ahead and every later record was `too_late`. A record just
/// inside `window.max_future_secs` is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_from_the_future_is_too_early_and_poisons_nothing() {
    use stampede::time::{format_status_time, now_ms};
    let app = TestApp::start("too-early", |_| {}).await;
    let years_ahead = format_status_time(now_ms() + 10 * 365 * 86_400_000);
    let now = format_status_time(now_ms());
    let body = format!(
        "{}\n{}",
        line("Skewed", &years_ahead, 1.0, 150, 150),
        line("Bucephalus", &now, 1.0, 150, 150)
    );
    let (status, reply) = post_json(app.addr, "/ingest", body, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (reply["accepted"].as_u64(), reply["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(reply["errors"][0]["reason"], "too_early");
    assert_eq!(reply["errors"][0]["field"], "StatusTime");
    // The watermark did not move: the fleet's next record is on time.
    let next = line(
        "Bucephalus",
        &format_status_time(now_ms() + 1_000),
        1.0,
        150,
        150,
    );
    let (_, reply) = post_json(app.addr, "/ingest", next, None).await;
    assert_eq!(reply["accepted"], 1, "{reply}");
    // Four minutes ahead is within the default five.
    let soon = line(
        "Prompt",
        &format_status_time(now_ms() + 240_000),
        1.0,
        150,
        150,
    );
    let (_, reply) = post_json(app.addr, "/ingest", soon, None).await;
    assert_eq!(reply["accepted"], 1, "{reply}");
    // The store writes behind the engine: the dead letter is there once it has been written.
    let dead = eventually("the dead letter stored", || async {
        let v = get_json(app.addr, "/api/dead-letters").await;
        (!v.as_array()?.is_empty()).then_some(v)
    })
    .await;
    assert_eq!(dead[0]["reason"], "too_early");
    assert!(dead[0]["raw"].as_str().unwrap().contains("Skewed"));
    let (_, metrics) = request(app.addr, Method::GET, "/metrics", "", None).await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("stampede_records_rejected_total{reason=\"too_early\"} 1"),
        "{metrics}"
    );
    app.stop().await;
}

/// The stampede_unicorns gauge of the HTTP partition, once it is published.
async fn unicorns_tracked(addr: std::net::SocketAddr) -> Option<u64> {
    let (_, metrics) = request(addr, Method::GET, "/metrics", "", None).await;
    let metrics = String::from_utf8(metrics).ok()?;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("stampede_unicorns{source=\"http\",partition=\"0\"} "))?
        .parse()
        .ok()
}

/// A flood of distinct names is forgotten once its windows are final and its unicorns are
/// silent past `web.silent_after_secs`: the engine's gauge comes back down, the live fleet
/// empties, the flood's results are kept, and a returning name is simply new. Before, every
/// name ever seen was kept for the life of the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_names_is_forgotten_once_silent_and_final() {
    use stampede::time::{format_status_time, now_ms};
    // Windows close on event time only (a long idle timeout), so the test says when.
    let app = TestApp::start("forget", |c| {
        c.window.size_secs = 1;
        c.window.out_of_orderness_secs = 0;
        c.window.allowed_lateness_secs = 0;
        c.window.idle_timeout_secs = 3_600;
        c.web.silent_after_secs = 1;
    })
    .await;
    const FLOOD: u64 = 3_000;
    let t0 = now_ms() / 1_000 * 1_000;
    let at = |secs: i64| format_status_time(t0 + secs * 1_000);
    let body: Vec<String> = (0..FLOOD)
        .map(|i| line(&format!("flood-{i}"), &at(0), 1.0, 150, 150))
        .collect();
    let (_, reply) = post_json(app.addr, "/ingest", body.join("\n"), None).await;
    assert_eq!(reply["accepted"], FLOOD, "{reply}");
    // Their window is open: silent or not, they are kept.
    eventually("the flood counted", || async {
        (unicorns_tracked(app.addr).await? == FLOOD).then_some(())
    })
    .await;

    // One record two seconds on makes the flood's window final.
    let (_, reply) = post_json(app.addr, "/ingest", line("Closer", &at(2), 1.0, 1, 1), None).await;
    assert_eq!(reply["accepted"], 1, "{reply}");
    eventually("the flood forgotten", || async {
        (unicorns_tracked(app.addr).await? == 1).then_some(())
    })
    .await;
    let fleet = eventually("the live fleet down to Closer", || async {
        let v = get_json(app.addr, "/api/unicorns").await;
        (v.as_array()?.len() == 1).then_some(v)
    })
    .await;
    assert_eq!(fleet[0]["Name"], "Closer");
    // Forgetting lost no result.
    let stored = get_json(app.addr, "/api/summaries?name=flood-7").await;
    assert_eq!(stored[0]["Records"], 1, "{stored}");

    // flood-7 returns: a new unicorn, with nothing of its old window.
    let (_, reply) = post_json(
        app.addr,
        "/ingest",
        line("flood-7", &at(3), 4.0, 9, 9),
        None,
    )
    .await;
    assert_eq!(reply["accepted"], 1, "{reply}");
    let app = app.restart(|_| {}).await;
    let stored = get_json(app.addr, "/api/summaries?name=flood-7").await;
    let got: Vec<(String, u64, f64)> = stored
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let t = s["StatusTime"].as_str().unwrap().to_owned();
            (
                t,
                s["Records"].as_u64().unwrap(),
                s["Distance"].as_f64().unwrap(),
            )
        })
        .collect();
    let mut got = got;
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, [(at(0), 1, 1.0), (at(3), 1, 4.0)]);
    app.stop().await;
}

/// A file is history: a `StatusTime` far in the future is a record like any other there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_keeps_no_wall_clock_rule() {
    let dir = temp_dir("file-future");
    let input = dir.join("future.ndjson");
    std::fs::write(
        &input,
        line("Voyager", "2100-01-01 00:00:01", 2.5, 150, 150),
    )
    .unwrap();
    let app = TestApp::start_in(dir, |c| {
        c.source.kind = stampede::config::SourceKind::File;
        c.source.path = input.display().to_string();
    })
    .await;
    let stored = eventually("the future record's summary", || async {
        let v = get_json(app.addr, "/api/summaries").await;
        (v.as_array()?.len() == 1).then_some(v)
    })
    .await;
    assert_eq!(stored[0]["StatusTime"], "2100-01-01 00:00:00.000");
    assert_eq!(stored[0]["Distance"], 2.5);
    app.stop().await;
}

/// Past `web.max_ws_clients`, an upgrade is refused with 503 and a JSON reason before any
/// WebSocket exists; a slot freed by a client that leaves is taken by the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_clients_past_the_cap_get_503_with_a_reason() {
    let app = TestApp::start("ws-cap", |c| c.web.max_ws_clients = 2).await;
    let mut first = ws_connect(app.addr).await;
    let mut second = ws_connect(app.addr).await;
    assert_eq!(next_frame(&mut first).await["type"], "snapshot");
    assert_eq!(next_frame(&mut second).await["type"], "snapshot");
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers().get("retry-after").unwrap(), "5");
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("web.max_ws_clients"),
                "{body}"
            );
        }
        other => panic!("expected 503, got {:?}", other.map(|(_, r)| r.status())),
    }
    first.close(None).await.unwrap();
    drop(first);
    let mut third = eventually("a freed slot", || async {
        tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr))
            .await
            .ok()
            .map(|(ws, _)| ws)
    })
    .await;
    assert_eq!(next_frame(&mut third).await["type"], "snapshot");
    app.stop().await;
}

/// `GET /api/unicorns` with paging parameters: the status, `X-Total-Count` and the names.
async fn table_page(addr: std::net::SocketAddr, query: &str) -> (usize, Vec<Value>) {
    let path = format!("/api/unicorns?{query}");
    let (status, headers, body) =
        crate::support::service::request_with(addr, Method::GET, &path, &[], "").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&body)
    );
    let total = headers["x-total-count"].to_str().unwrap().parse().unwrap();
    (total, serde_json::from_slice(&body).unwrap())
}

fn names_of(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["Name"].as_str().unwrap().to_owned())
        .collect()
}

/// The fleet table pages, sorts and searches on the server. The expected pages are built here
/// from how the fleet was made: u1…u250 (natural order is numeric order) after three named ones
/// whose case differs (natural order folds case), health `(37·i) mod 101` (ties between i and
/// i+101 go by name), one closed minute each for the u's and none for the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_table_pages_sorts_and_searches_on_the_server() {
    let app = TestApp::start("table", |_| {}).await;
    let addr = app.addr;
    // (name, health, minute distance), in natural order of names.
    let mut fleet: Vec<(String, i64, Option<f64>)> = vec![
        ("Dowager".into(), 500, None),
        ("Shadowfax".into(), 500, None),
        ("SHADOWMERE".into(), 7, None),
    ];
    fleet.extend((1..=250u8).map(|i| {
        (
            format!("u{i}"),
            (37 * i64::from(i)) % 101,
            Some(f64::from(i)),
        )
    }));
    let mut body = String::new();
    // The u's first: the others' later time then closes the u's minute.
    for (name, health, minute) in fleet.iter().rev() {
        let time = if minute.is_some() {
            "2018-03-18 03:20:30"
        } else {
            "2018-03-18 03:21:20"
        };
        body.push_str(&line(name, time, minute.unwrap_or(0.5), *health, 100));
        body.push('\n');
    }
    let (status, reply) = post_json(addr, "/ingest", body, None).await;
    assert_eq!(
        (status, reply["accepted"].as_u64()),
        (StatusCode::OK, Some(253)),
        "{reply}"
    );
    // Every u has its minute once the hub has the summaries.
    eventually("every closed minute in the table", || async {
        let (_, rows) = table_page(addr, "sort=minute&limit=1000").await;
        (rows
            .iter()
            .filter(|r| r["MinuteDistance"].is_number())
            .count()
            == 250)
            .then_some(())
    })
    .await;
    let all: Vec<String> = fleet.iter().map(|f| f.0.clone()).collect();

    // Without parameters: every unicorn (the contract's list), in natural order.
    let (status, headers, body) =
        crate::support::service::request_with(addr, Method::GET, "/api/unicorns", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-total-count"], "253");
    assert_eq!(
        names_of(&serde_json::from_slice::<Vec<Value>>(&body).unwrap()),
        all
    );

    // By name, page by page.
    assert_eq!(table_page(addr, "limit=5").await.1.len(), 5);
    let (total, rows) = table_page(addr, "limit=5").await;
    assert_eq!((total, names_of(&rows)), (253, all[..5].to_vec()));
    let (total, rows) = table_page(addr, "offset=250&limit=10").await;
    assert_eq!((total, names_of(&rows)), (253, all[250..].to_vec()));
    let (total, rows) = table_page(addr, "order=desc&limit=2").await;
    assert_eq!(
        (total, names_of(&rows)),
        (253, vec!["u250".into(), "u249".into()])
    );
    let (total, rows) = table_page(addr, "offset=900").await;
    assert_eq!((total, rows.len()), (253, 0));

    // A search, ASCII case ignored.
    let (total, rows) = table_page(addr, "q=shadow").await;
    assert_eq!(
        (total, names_of(&rows)),
        (2, vec!["Shadowfax".into(), "SHADOWMERE".into()])
    );
    let with_u2: Vec<String> = all.iter().filter(|n| n.contains("u2")).cloned().collect();
    let (total, rows) = table_page(addr, "q=U2&offset=1&limit=3").await;
    assert_eq!(
        (total, names_of(&rows)),
        (with_u2.len(), with_u2[1..4].to_vec())
    );

    // By health: largest first by default, ties by name; and the other way.
    let mut by_health: Vec<(i64, usize)> =
        fleet.iter().enumerate().map(|(k, f)| (f.1, k)).collect();
    by_health.sort_by_key(|&(h, k)| (-h, k));
    let want: Vec<String> = by_health.iter().map(|&(_, k)| all[k].clone()).collect();
    let (total, rows) = table_page(addr, "sort=health&limit=20").await;
    assert_eq!((total, names_of(&rows)), (253, want[..20].to_vec()));
    assert_eq!(rows[0]["HealthPoints"], 500);
    by_health.sort_by_key(|&(h, k)| (h, k));
    let want: Vec<String> = by_health.iter().map(|&(_, k)| all[k].clone()).collect();
    let (_, rows) = table_page(addr, "sort=health&order=asc&offset=240&limit=20").await;
    assert_eq!(names_of(&rows), want[240..].to_vec());
    let (total, rows) = table_page(addr, "sort=health&q=shadow").await;
    assert_eq!(
        (total, names_of(&rows)),
        (2, vec!["Shadowfax".into(), "SHADOWMERE".into()])
    );

    // By the last minute's distance: those without a closed minute last, either way.
    let (_, rows) = table_page(addr, "sort=minute&limit=1000").await;
    let mut want: Vec<String> = (1..=250).rev().map(|i| format!("u{i}")).collect();
    want.extend(all[..3].iter().cloned());
    assert_eq!(names_of(&rows), want);
    assert_eq!(rows[0]["MinuteDistance"], 250.0);
    let (_, rows) = table_page(addr, "sort=minute&order=asc&limit=2").await;
    assert_eq!(names_of(&rows), vec!["u1".to_owned(), "u2".to_owned()]);

    // Bad parameters: 400 naming the parameter.
    let long = "x".repeat(65);
    for (query, key) in [
        ("sort=colour", "sort"),
        ("order=up", "order"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("offset=-1", "offset"),
        (&*format!("q={long}"), "q"),
    ] {
        let (status, body) = request(
            addr,
            Method::GET,
            &format!("/api/unicorns?{query}"),
            "",
            None,
        )
        .await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(
            v["error"].as_str().unwrap().starts_with(key),
            "{query}: {v}"
        );
    }
    app.stop().await;
}

/// The value of the metric line `name` (labels included) in a Prometheus text exposition.
fn metric_value(metrics: &str, name: &str) -> Option<u64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}
