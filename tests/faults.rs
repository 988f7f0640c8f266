//! Faults an operator meets besides a crash: a disk that fills up under the store and the
//! archive. (A damaged store is in `store.rs`; AWS's throttling and partial failures in
//! `kinesis.rs`.)

use std::net::SocketAddr;

use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::archive::{accepted, archived_lines, assert_exactly_once};
use crate::support::disk::SmallDisk;
use crate::support::poll::{eventually_within, LONG};
use crate::support::process::{signal, start_service_with};
use crate::support::reference;
use crate::support::service::{request_with, temp_dir};

/// 2026-01-01 00:00:00 UTC.
const T0: i64 = 1_767_225_600_000;
const UNICORNS: usize = 200;

/// One second of the fleet: a record per unicorn, health and magic moving with time.
fn second(s: i64) -> Vec<u8> {
    let time = chrono::DateTime::from_timestamp_millis(T0 + s * 1_000)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S%.3f");
    let mut body = Vec::new();
    for u in 0..UNICORNS {
        let health = 80 + (s + u as i64 * 7) % 70;
        let magic = 90 + (s * 3 + u as i64) % 60;
        body.extend_from_slice(
            format!(
                "{{\"Name\":\"unicorn-{u:03}\",\"StatusTime\":\"{time}\",\"Latitude\":47.6,\"Longitude\":-122.3,\"Distance\":{}.5,\"HealthPoints\":{health},\"MagicPoints\":{magic}}}\n",
                s % 9
            )
            .as_bytes(),
        );
    }
    body
}

async fn post(addr: SocketAddr, body: &[u8]) -> (StatusCode, hyper::HeaderMap, Value) {
    let (status, headers, reply) =
        request_with(addr, Method::POST, "/ingest", &[], body.to_vec()).await;
    let reply = serde_json::from_slice(&reply).unwrap_or(Value::Null);
    (status, headers, reply)
}

async fn readyz(addr: SocketAddr) -> (StatusCode, Value) {
    let (status, _, body) = request_with(addr, Method::GET, "/readyz", &[], Vec::new()).await;
    (status, serde_json::from_slice(&body).unwrap())
}

/// The store and a directory archive on a 4 MiB filesystem while a fleet posts: the service
/// stays up, `/readyz` names what cannot write and why, and once the records taken in since
/// reach `web.max_unwritten_records` ingest answers 503 with `Retry-After` instead of taking
/// records it could lose. The filesystem is then grown: everything accepted is stored (equal to
/// the reference's windows over exactly the accepted records) and archived once, the stop is
/// clean, and a restart opens the store as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_ingest_at_its_bound_and_loses_nothing_once_space_returns() {
    let dir = temp_dir("full-disk");
    let disk = SmallDisk::mount(&dir.join("disk"), "4m");
    let store = dir.join("disk/store");
    let archive = dir.join("disk/archive");
    let env = [
        ("STAMPEDE_ARCHIVE_KIND", "dir"),
        ("STAMPEDE_ARCHIVE_PATH", archive.to_str().unwrap()),
        ("STAMPEDE_ARCHIVE_BUFFER_SECS", "1"),
        ("STAMPEDE_ARCHIVE_BUFFER_BYTES", "65536"),
        ("STAMPEDE_WEB_MAX_UNWRITTEN_RECORDS", "20000"),
        ("STAMPEDE_ALERTS_ENABLED", "false"),
    ];
    let serve = start_service_with(&["serve"], &store, &env);
    let addr: SocketAddr = serve.url.trim_start_matches("http://").parse().unwrap();

    // Post until ingest refuses: the disk fills long before 20 minutes of the fleet.
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut s = 0;
    let refusal = loop {
        assert!(s < 1_200, "ingest never refused on a full disk");
        let body = second(s);
        let (status, headers, reply) = post(addr, &body).await;
        if status == StatusCode::OK {
            assert_eq!(reply["accepted"], UNICORNS, "{reply}");
            sent.push(body);
            s += 1;
            continue;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
        assert_eq!(headers.get("retry-after").unwrap(), "5");
        break reply["error"].as_str().unwrap().to_owned();
    };
    assert!(
        refusal.contains("cannot write") && refusal.contains("web.max_unwritten_records = 20000"),
        "{refusal}"
    );
    // At the bound, not before it: at least 20,000 records since the first failed write.
    assert!(
        sent.len() * UNICORNS >= 20_000,
        "{} records",
        sent.len() * UNICORNS
    );
    let (status, ready) = readyz(addr).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    let reasons = ready["reasons"].to_string();
    assert!(reasons.contains("No space left on device"), "{ready}");
    eprintln!(
        "disk full: ingest refused after {} records: {refusal}; /readyz: {reasons}",
        sent.len() * UNICORNS
    );
    // Still refused while nothing can be written.
    let (status, _, _) = post(addr, &second(s)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    disk.resize("512m");
    eventually_within(
        std::time::Duration::from_secs(LONG),
        "/readyz ready once space returned",
        || async { (readyz(addr).await.0 == StatusCode::OK).then_some(()) },
    )
    .await;
    // The rest of the fleet's half hour goes in, each second once accepted.
    for s in s..1_200 {
        let body = second(s);
        let (status, _, reply) = post(addr, &body).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(reply["accepted"], UNICORNS, "{reply}");
        sent.push(body);
    }
    assert!(signal(serve, "-TERM").success(), "a clean stop");

    // Everything accepted, archived once.
    let want = accepted(sent.iter().cloned());
    assert_exactly_once(&archived_lines(&archive), &want);
    // And stored: a restart opens the store as it was, holding the reference's windows.
    let expected = reference::run(sent.iter().flat_map(|b| b.split(|c| *c == b'\n')));
    let serve = start_service_with(&["serve"], &store, &env);
    let addr: SocketAddr = serve.url.trim_start_matches("http://").parse().unwrap();
    let (status, _, body) = request_with(
        addr,
        Method::GET,
        "/api/summaries?limit=10000",
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut ndjson = Vec::new();
    let mut stored: Vec<Value> = serde_json::from_slice(&body).unwrap();
    stored.sort_by_key(|v| (v["StatusTime"].to_string(), v["Name"].to_string()));
    for v in &stored {
        ndjson.extend_from_slice(v.to_string().as_bytes());
        ndjson.push(b'\n');
    }
    let got = reference::parse_output(&ndjson);
    assert_eq!(got.len(), expected.summaries.len(), "windows stored");
    for (key, want) in &expected.summaries {
        assert_eq!(got.get(key), Some(want), "window {key:?}");
    }
    assert!(signal(serve, "-TERM").success());
    drop(disk);
}
