//! Faults an operator meets besides a crash: a disk that fills up under the store and the
//! archive. (A damaged store is in `store.rs`; AWS's throttling and partial failures in
//! `kinesis.rs`.)

use std::net::SocketAddr;
use std::ops::Not as _;

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

/// The same full disk under a Kafka-fed instance: once the records received since the archive
/// and the store stopped writing reach the bound, the source stops reading (its partitions
/// paused, nothing more received while the disk stays full); grown, every window equals
/// `aggregate`'s over the topic in the store and on the summary stream, and every accepted
/// record is archived once.
#[test]
fn kafka_pauses_on_a_full_disk_and_loses_nothing_once_space_returns() {
    use crate::support::kafka::{
        assert_same, await_summaries, broker, close_all_windows, create_topic, expected,
        keep_newest, read_topic, unique, ServeConfig, Summaries,
    };
    use crate::support::poll::{wait_until_within, LONGEST};
    use crate::support::process::{http_get, http_get_json, metric};

    let brokers = broker();
    let dir = temp_dir("full-disk-kafka");
    let disk = SmallDisk::mount(&dir.join("disk"), "4m");
    let topic = unique("full-disk-telemetry");
    let summaries = unique("full-disk-summary");
    let dead = unique("full-disk-dlq");
    create_topic(&brokers, &topic, 2);
    create_topic(&brokers, &summaries, 1);
    create_topic(&brokers, &dead, 1);
    let config = ServeConfig {
        brokers: &brokers,
        topic: &topic,
        group: &unique("full-disk-group"),
        summaries: &summaries,
        dead_letters: &dead,
        idle_secs: 3_600,
    }
    .write(&dir);
    let archive = dir.join("disk/archive");
    let serve = start_service_with(
        &["serve", "--config", config.to_str().unwrap()],
        &dir.join("disk/store"),
        &[
            ("STAMPEDE_ARCHIVE_KIND", "dir"),
            ("STAMPEDE_ARCHIVE_PATH", archive.to_str().unwrap()),
            ("STAMPEDE_ARCHIVE_BUFFER_BYTES", "65536"),
            ("STAMPEDE_ARCHIVE_BUFFER_SECS", "1"),
            ("STAMPEDE_WEB_MAX_UNWRITTEN_RECORDS", "5000"),
            ("STAMPEDE_ALERTS_ENABLED", "false"),
        ],
    );
    // 2,000 records a second for 30 s (11 MB as received): the archive's 4 MiB fill up within
    // the first half.
    let producer = {
        let to = format!("kafka://{brokers}/{topic}");
        std::thread::spawn(move || {
            let out = crate::support::process::stampede([
                "produce",
                "--rate",
                "50",
                "--unicorns",
                "40",
                "--msgs",
                "60000",
                "--quiet",
                "--seed",
                "23",
                "--start-time",
                "2026-01-01 00:00:00",
                "--to",
                &to,
            ])
            .output()
            .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        })
    };
    wait_until_within(LONG, "the archive out of space", || {
        http_get(&format!("{}/readyz", serve.url))
            .1
            .contains("No space left on device")
    });
    // Paused: what was received stops growing while the producer goes on.
    let mut received = 0;
    wait_until_within(LONG, "the source paused", || {
        let now = metric(&serve.url, "stampede_records_in_total");
        let still = now == received;
        received = now;
        still
            && crate::support::poll::holds_within(
                std::time::Duration::from_secs(2),
                std::time::Duration::from_millis(100),
                || metric(&serve.url, "stampede_records_in_total") != now,
            )
            .not()
    });
    assert!(
        !producer.is_finished(),
        "paused only once the producer was done"
    );
    assert!(metric(&serve.url, "stampede_source_paused_total") > 0);
    eprintln!("disk full: the Kafka source paused after {received} of 60,000 records");

    disk.resize("512m");
    producer.join().unwrap();
    close_all_windows(&brokers, &topic, 2, "2026-01-01 02:00:00");
    let partitions = read_topic(&brokers, &topic);
    let (want, _) = expected(&partitions, &dir);
    let got = await_summaries(&brokers, &summaries, &want);
    assert_same(&got, &want);
    let mut stored = Summaries::new();
    for v in http_get_json(&format!("{}/api/summaries?limit=10000", serve.url))
        .as_array()
        .unwrap()
    {
        keep_newest(&mut stored, v.clone());
    }
    assert_same(&stored, &want);
    let records = accepted(partitions.into_iter().flatten().map(|m| m.payload));
    let total: u32 = records.values().sum();
    wait_until_within(LONGEST, "every accepted record archived", || {
        archived_lines(&archive).values().sum::<u32>() >= total
    });
    assert!(signal(serve, "-TERM").success(), "a clean stop");
    assert_exactly_once(&archived_lines(&archive), &records);
    drop(disk);
}
