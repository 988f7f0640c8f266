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
    let serve = start_service_with(&["serve"], &store, &env);
    assert_stored_as_the_reference(&serve.url, &sent).await;
    assert!(signal(serve, "-TERM").success());
    drop(disk);
}

/// The store of the service at `url` holds exactly the windows the reference computes over the
/// `sent` bodies (in order).
async fn assert_stored_as_the_reference(url: &str, sent: &[Vec<u8>]) {
    let expected = reference::run(sent.iter().flat_map(|b| b.split(|c| *c == b'\n')));
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let (status, _, body) = request_with(
        addr,
        Method::GET,
        "/api/summaries?limit=10000",
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut stored: Vec<Value> = serde_json::from_slice(&body).unwrap();
    stored.sort_by_key(|v| (v["StatusTime"].to_string(), v["Name"].to_string()));
    let mut ndjson = Vec::new();
    for v in &stored {
        ndjson.extend_from_slice(v.to_string().as_bytes());
        ndjson.push(b'\n');
    }
    let got = reference::parse_output(&ndjson);
    assert_eq!(got.len(), expected.summaries.len(), "windows stored");
    for (key, want) in &expected.summaries {
        assert_eq!(got.get(key), Some(want), "window {key:?}");
    }
}

/// The same full disk under a Kafka-fed instance: once the records received since the archive
/// and the store stopped writing reach the bound, the source stops reading (its partitions
/// paused, nothing more received while the disk stays full); grown, every window equals
/// `aggregate`'s over the topic in the store and on the summary stream, and every accepted
/// record is archived once.
#[test]
fn kafka_pauses_on_a_full_disk_and_loses_nothing_once_space_returns() {
    use crate::support::kafka::{
        assert_same, await_summaries, close_all_windows, expected, keep_newest, read_topic, Fresh,
        Summaries,
    };
    use crate::support::poll::{wait_until_within, LONGEST};
    use crate::support::process::{http_get, http_get_json, metric};

    let dir = temp_dir("full-disk-kafka");
    let disk = SmallDisk::mount(&dir.join("disk"), "4m");
    let fresh = Fresh::new(&dir, "full-disk", 2);
    let (brokers, topic, summaries, config) =
        (fresh.brokers, fresh.topic, fresh.summaries, fresh.config);
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
    // 2,000 records a second for 40 s (15 MB as received): the archive's 4 MiB fill up within
    // the first quarter.
    let producer = {
        let to = format!("kafka://{brokers}/{topic}");
        std::thread::spawn(move || {
            crate::support::process::stampede_ok(&[
                "produce",
                "--rate",
                "50",
                "--unicorns",
                "40",
                "--msgs",
                "80000",
                "--quiet",
                "--seed",
                "23",
                "--start-time",
                "2026-01-01 00:00:00",
                "--to",
                &to,
            ]);
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
    eprintln!("disk full: the Kafka source paused after {received} of 80,000 records");

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

/// How a flaky network is toured: each fault in turn, while a phase of records is sent.
const TOUR: [crate::support::flaky::Fault; 4] = {
    use crate::support::flaky::Fault;
    [
        Fault::Latency(std::time::Duration::from_millis(250)),
        Fault::Reset,
        Fault::Stall,
        Fault::Refuse,
    ]
};

/// Runs [`TOUR`] on `proxy` in front of what `part` of the service at `url` talks to: for each
/// fault, `feed(phase)` sends a phase of records; latency leaves the service ready; a reset, a
/// stall and a refusal make `/readyz` say `part` is down, with a reason, while they last; and
/// once the fault ends it is ready again. While connections are reset, the service's connection
/// attempts over five seconds (nothing else asks it anything meanwhile) are counted: a retry
/// loop without backoff would make thousands. Returns that count.
pub(crate) fn tour(
    proxy: &crate::support::flaky::Flaky,
    url: &str,
    part: &str,
    mut feed: impl FnMut(usize),
) -> u64 {
    use crate::support::flaky::Fault;
    use crate::support::poll::wait_until_within;
    use crate::support::process::http_get;
    let readyz = || {
        let (status, body) = http_get(&format!("{url}/readyz"));
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
        )
    };
    wait_until_within(LONG, "/readyz ready before the faults", || {
        readyz().0 == 200
    });
    let mut attempts = 0;
    for (phase, fault) in TOUR.into_iter().enumerate() {
        proxy.set(fault);
        feed(phase);
        if let Fault::Latency(_) = fault {
            // The part itself: a round of alerts through the same slow link may take longer
            // than the 5 s after which a call under way counts as no answer.
            let (_, ready) = readyz();
            assert_eq!(ready["checks"][part], true, "latency is no outage: {ready}");
        } else {
            let mut said = Value::Null;
            wait_until_within(
                LONG,
                &format!("/readyz naming {part} under {fault:?}"),
                || {
                    let (status, ready) = readyz();
                    said = ready["reasons"][part].clone();
                    status == 503 && ready["checks"][part] == false && said.is_string()
                },
            );
            eprintln!("{fault:?}: /readyz says {part}: {said}");
        }
        if fault == Fault::Reset {
            let before = proxy.connections();
            std::thread::sleep(std::time::Duration::from_secs(5));
            attempts = proxy.connections() - before;
            eprintln!("{fault:?}: {attempts} connection attempts in 5 s");
        }
        proxy.set(Fault::None);
        wait_until_within(LONG, &format!("/readyz ready after {fault:?}"), || {
            readyz().0 == 200
        });
    }
    attempts
}

/// DynamoDB behind a flaky network (latency, resets, a stall, a refusal, in turn) while a fleet
/// posts over HTTP: readiness tells the truth while each lasts, the store backs off rather than
/// storming, and in the end it holds exactly the reference's windows over every record sent.
#[test]
fn a_flaky_network_to_dynamodb_loses_nothing_and_readiness_tells_the_truth() {
    use crate::support::aws::{self, Aws};
    use crate::support::flaky::Flaky;
    let dynamodb = Aws::DynamoDb.endpoint();
    let proxy = Flaky::start(dynamodb.trim_start_matches("http://"));
    let dir = temp_dir("flaky-dynamodb");
    let table = crate::support::kafka::unique("UnicornSensorData");
    let dead = crate::support::kafka::unique("stampede-dead-letters");
    let mut env: Vec<(&str, String)> = aws::env(&[Aws::DynamoDb]);
    for (k, v) in [
        ("STAMPEDE_STORE_KIND", "dynamodb"),
        ("STAMPEDE_STORE_TABLE", &table),
        ("STAMPEDE_STORE_DEAD_LETTER_TABLE", &dead),
        ("STAMPEDE_STORE_CREATE_TABLES", "true"),
        ("STAMPEDE_ALERTS_ENABLED", "false"),
    ] {
        env.push((k, v.to_owned()));
    }
    let direct: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let through = format!("http://{}", proxy.addr);
    let mut flaky = direct.clone();
    flaky.push((Aws::DynamoDb.endpoint_var(), &through));
    let serve = start_service_with(&["serve"], &dir.join("a"), &flaky);
    let addr: SocketAddr = serve.url.trim_start_matches("http://").parse().unwrap();
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let attempts = tour(&proxy, &serve.url, "store", |phase| {
        // A minute of the fleet: the one before closes and is written meanwhile.
        for s in phase as i64 * 60..(phase as i64 + 1) * 60 {
            let body = second(s);
            let (status, _, reply) = rt.block_on(post(addr, &body));
            assert_eq!(status, StatusCode::OK, "{reply}");
            sent.push(body);
        }
    });
    assert!(
        attempts <= 40,
        "{attempts} connection attempts in 5 s of resets"
    );
    assert!(signal(serve, "-TERM").success(), "a clean stop");
    let serve = start_service_with(&["serve"], &dir.join("b"), &direct);
    rt.block_on(assert_stored_as_the_reference(&serve.url, &sent));
}

/// The `AlertId`s the reference's changes over `sent` have, once each.
fn reference_alert_ids(sent: &[Vec<u8>]) -> std::collections::BTreeMap<String, usize> {
    let outcome = reference::run(sent.iter().flat_map(|b| b.split(|c| *c == b'\n')));
    outcome
        .alerts
        .iter()
        .map(|(rule, name, _, _, t)| {
            let time = chrono::DateTime::from_timestamp_millis(*t)
                .unwrap()
                .format("%Y-%m-%d %H:%M:%S%.3f");
            (format!("{rule}/{name}/{time}"), 1)
        })
        .collect()
}

/// The messages (each a list of `AlertId`s) hold each of `want` once and nothing else, but for
/// whole messages sent again — what a sender does when the network lost the answer to a message
/// the receiver had taken (SNS and SMTP cannot tell a repeat; the message's `AlertId`s and
/// `Message-ID` let a receiver). Such repeats are few: at most one per fault that cuts
/// connections. Returns how many.
fn assert_once_but_repeats(
    messages: &[Vec<String>],
    want: &std::collections::BTreeMap<String, usize>,
    what: &str,
) -> usize {
    let mut seen = std::collections::BTreeSet::new();
    let mut got = std::collections::BTreeMap::new();
    let mut repeated = 0;
    for m in messages {
        if !seen.insert(m.clone()) {
            repeated += 1;
            continue;
        }
        for id in m {
            *got.entry(id.clone()).or_insert(0usize) += 1;
        }
    }
    assert_once(&got, want, what);
    assert!(repeated <= 4, "{repeated} messages {what} again");
    repeated
}

/// Each of `want` is in `got` once, and nothing else is: said briefly (a thousand ids) when not.
fn assert_once(
    got: &std::collections::BTreeMap<String, usize>,
    want: &std::collections::BTreeMap<String, usize>,
    what: &str,
) {
    let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let twice: Vec<(&String, &usize)> = got.iter().filter(|(_, n)| **n > 1).collect();
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && twice.is_empty() && extra.is_empty(),
        "of {} changes, {} not {what} (first {:?}), {} {what} more than once (first {:?}), {} {what} that were not made (first {:?})",
        want.len(),
        missing.len(),
        missing.first(),
        twice.len(),
        &twice[..twice.len().min(5)],
        extra.len(),
        extra.first()
    );
}

/// Posts a minute of the fleet for `phase` over HTTP, each second accepted whole; keeps the
/// bodies in `sent`.
fn post_minute(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    phase: usize,
    sent: &mut Vec<Vec<u8>>,
) {
    for s in phase as i64 * 60..(phase as i64 + 1) * 60 {
        let body = second(s);
        let (status, _, reply) = rt.block_on(post(addr, &body));
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(reply["accepted"], UNICORNS, "{reply}");
        sent.push(body);
    }
}

/// S3 and SNS (moto) behind a flaky network while a fleet posts over HTTP, archived to S3 with
/// alerts published to SNS: readiness names the archive while each fault lasts, and in the end
/// every accepted record is in the bucket once and every alert change the reference makes was
/// published once.
#[test]
fn a_flaky_network_to_s3_and_sns_archives_and_publishes_everything_once() {
    use crate::support::aws::{self, Aws};
    use crate::support::flaky::Flaky;
    use crate::support::sns::create_topic;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let moto = Aws::S3.endpoint();
    let proxy = Flaky::start(moto.trim_start_matches("http://"));
    let through = format!("http://{}", proxy.addr);
    let bucket = crate::support::kafka::unique("lake");
    rt.block_on(crate::support::s3::create_bucket(&bucket));
    let topic = rt.block_on(async { create_topic(&aws::sns().await).await });
    let dir = temp_dir("flaky-moto");
    let mut env: Vec<(&str, String)> = aws::env(&[]);
    for (k, v) in [
        (Aws::S3.endpoint_var(), through.as_str()),
        (Aws::Sns.endpoint_var(), through.as_str()),
        ("STAMPEDE_ARCHIVE_KIND", "s3"),
        ("STAMPEDE_ARCHIVE_BUCKET", &bucket),
        ("STAMPEDE_ARCHIVE_BUFFER_SECS", "1"),
        ("STAMPEDE_ALERTS_SNS_TOPIC_ARN", &topic),
        ("STAMPEDE_ALERTS_GROUP_INTERVAL_SECS", "1"),
    ] {
        env.push((k, v.to_owned()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let serve = start_service_with(&["serve"], &dir, &env);
    let addr: SocketAddr = serve.url.trim_start_matches("http://").parse().unwrap();
    let mut sent = Vec::new();
    let attempts = tour(&proxy, &serve.url, "archive", |phase| {
        post_minute(&rt, addr, phase, &mut sent);
    });
    assert!(
        attempts <= 40,
        "{attempts} connection attempts in 5 s of resets"
    );
    post_minute(&rt, addr, TOUR.len(), &mut sent);
    assert!(signal(serve, "-TERM").success(), "a clean stop");
    let want = accepted(sent.iter().cloned());
    let objects = rt.block_on(crate::support::s3::objects(&bucket));
    assert_exactly_once(&crate::support::s3::lines(&objects), &want);
    let alerts = reference_alert_ids(&sent);
    let repeated = assert_once_but_repeats(
        &crate::support::sns::published_id_lists(&topic),
        &alerts,
        "published",
    );
    eprintln!(
        "flaky S3 and SNS: {} records archived once, {} changes published once, {repeated} messages repeated whose answer was lost",
        want.values().sum::<u32>(),
        alerts.len()
    );
}

/// The SMTP server behind a flaky network: readiness names the alerts while each fault lasts,
/// and in the end the subscriber has every change the reference makes, once.
#[test]
fn a_flaky_network_to_the_mail_server_mails_every_change_once() {
    use crate::alerts::{alert_ids, confirm_by_mail, subscribe, unique_address};
    use crate::support::flaky::Flaky;
    use crate::support::mail::{await_mails_within, smtp_server};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = Flaky::start(&smtp_server());
    let dir = temp_dir("flaky-smtp");
    let smtp = format!("smtp://{}", proxy.addr);
    let env = [
        ("STAMPEDE_ALERTS_SMTP_SERVER", smtp.as_str()),
        ("STAMPEDE_ALERTS_GROUP_INTERVAL_SECS", "1"),
    ];
    let serve = start_service_with(&["serve"], &dir, &env);
    let addr: SocketAddr = serve.url.trim_start_matches("http://").parse().unwrap();
    let ops = unique_address("flaky");
    rt.block_on(async {
        let (status, v) = subscribe(addr, serde_json::json!({"email": ops})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        confirm_by_mail(addr, &ops).await;
    });
    let mut sent = Vec::new();
    let attempts = tour(&proxy, &serve.url, "alerts", |phase| {
        post_minute(&rt, addr, phase, &mut sent);
    });
    assert!(
        attempts <= 40,
        "{attempts} connection attempts in 5 s of resets"
    );
    let want = reference_alert_ids(&sent);
    await_mails_within(LONG, &ops, "every change mailed", |m| {
        alert_ids(m).len() == want.len()
    });
    assert!(signal(serve, "-TERM").success(), "a clean stop");
    let mails: Vec<Vec<String>> = crate::support::mail::mails_to(&ops)
        .iter()
        .map(crate::support::mail::Mail::alert_ids)
        .filter(|ids| !ids.is_empty())
        .collect();
    let repeated = assert_once_but_repeats(&mails, &want, "mailed");
    eprintln!(
        "flaky SMTP: {} changes mailed once, {repeated} mails repeated whose answer was lost",
        want.len()
    );
}
