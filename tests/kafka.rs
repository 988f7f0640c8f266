//! Kafka end to end, against the real broker `scripts/test` starts: produce → `serve` → summary
//! topic equals `aggregate` on the same data (partition by partition), dead letters with their
//! reasons, failover in a consumer group with SIGKILL, SIGKILL and restart, a broker outage, and
//! the CLI's errors.
//!
//! The expected summaries come from reading the telemetry topic back and running `stampede
//! aggregate` on each partition — the batch path, itself checked against an independent
//! reference in `cli` and `golden`. Each test uses its own topics and group.
//!
//! The failover test kills the member that joined second. The tansu broker (0.6.0) never evicts
//! a dead group *leader*: the survivor's JoinGroup keeps naming the dead member as leader and
//! SyncGroup never completes, so no partition is ever reassigned (seen with librdkafka's `cgrp`
//! debug log). Apache Kafka evicts any member whose session expires; the service does not care
//! which one dies.

use std::time::Duration;

use serde_json::Value;

use crate::support::aws::{self, Aws};
use crate::support::kafka::{
    assert_same, await_summaries, broker, close_all_windows, create_topic, expected, produce,
    read_topic, unique, PrivateBroker, ServeConfig,
};
use crate::support::poll::{wait_until, wait_until_within, LONG};
use crate::support::process::{
    http_get, http_get_json, metric, signal, stampede, start_service_with, Running,
};
use crate::support::service::temp_dir;

/// Start of the simulated data; the sentinels that close every window come an hour later.
const START: &str = "2026-01-01 00:00:00";
const SECOND_HALF: &str = "2026-01-01 00:04:10";
const SENTINEL: &str = "2026-01-01 02:00:00";

struct Topics {
    brokers: String,
    telemetry: String,
    summaries: String,
    dead_letters: String,
    group: String,
}

impl Topics {
    fn new(brokers: &str, name: &str) -> Topics {
        let t = Topics {
            brokers: brokers.to_owned(),
            telemetry: unique(&format!("{name}-telemetry")),
            summaries: unique(&format!("{name}-summary")),
            dead_letters: unique(&format!("{name}-dlq")),
            group: unique(&format!("{name}-group")),
        };
        create_topic(brokers, &t.telemetry, 4);
        create_topic(brokers, &t.summaries, 4);
        create_topic(brokers, &t.dead_letters, 1);
        t
    }

    fn serve(&self, dir: &std::path::Path) -> Running {
        self.serve_idle(dir, 3_600)
    }

    fn serve_idle(&self, dir: &std::path::Path, idle_secs: u64) -> Running {
        self.serve_with_session(dir, idle_secs, 6_000)
    }

    /// `serve` with the consumer group's session timeout at `session_ms`.
    fn serve_with_session(
        &self,
        dir: &std::path::Path,
        idle_secs: u64,
        session_ms: u32,
    ) -> Running {
        let config = ServeConfig {
            brokers: &self.brokers,
            topic: &self.telemetry,
            group: &self.group,
            summaries: &self.summaries,
            dead_letters: &self.dead_letters,
            idle_secs,
        }
        .write(dir);
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "\"session.timeout.ms\" = \"6000\"",
            &format!("\"session.timeout.ms\" = \"{session_ms}\""),
        );
        std::fs::write(&config, text).unwrap();
        let store = dir.join(format!("store-{}", unique("s")));
        start_service_with(
            &["serve", "--config", config.to_str().unwrap()],
            &store,
            &[],
        )
    }

    /// The second half of the data and the sentinels, then what `aggregate` expects.
    fn finish(
        &self,
        dir: &std::path::Path,
    ) -> (crate::support::kafka::Summaries, Vec<(String, Vec<u8>)>) {
        produce(&self.brokers, &self.telemetry, 10_000, SECOND_HALF, 8);
        close_all_windows(&self.brokers, &self.telemetry, 4, SENTINEL);
        expected(&read_topic(&self.brokers, &self.telemetry), dir)
    }
}

#[test]
fn kafka_summaries_equal_aggregate_and_bad_records_reach_the_dead_letter_topic() {
    let brokers = broker();
    let dir = temp_dir("kafka-e2e");
    let t = Topics::new(&brokers, "e2e");
    produce(&brokers, &t.telemetry, 10_000, START, 7);
    let serve = t.serve(&dir);
    let (want, rejected) = t.finish(&dir);
    assert!(want.len() > 300, "{} windows", want.len());
    let got = await_summaries(&brokers, &t.summaries, &want);
    assert_same(&got, &want);
    assert!(
        got.values().any(|s| s["Revision"].as_u64() > Some(0)),
        "late records restated some windows"
    );

    // Every rejected record, and nothing else, is in the dead-letter topic with its reason.
    let mut dead: Vec<(String, Vec<u8>)> = Vec::new();
    wait_until("dead letters", || {
        dead = read_topic(&brokers, &t.dead_letters)
            .into_iter()
            .flatten()
            .map(|m| {
                let origin = &m.headers["origin"];
                assert!(
                    origin.starts_with(&format!("kafka:{}/", t.telemetry)),
                    "{origin}"
                );
                (m.headers["reason"].clone(), m.payload)
            })
            .collect();
        dead.len() >= rejected.len()
    });
    dead.sort();
    assert_eq!(dead, rejected);
    let reasons: std::collections::BTreeSet<&str> = dead.iter().map(|(r, _)| r.as_str()).collect();
    assert!(
        reasons.contains("malformed_json") && reasons.contains("too_late"),
        "{reasons:?}"
    );
    // The store has them too.
    let stored: Value = http_get_json(&format!("{}/api/dead-letters?limit=1000", serve.url));
    assert_eq!(stored.as_array().map(Vec::len), Some(rejected.len()));
    let ready: Value = http_get_json(&format!("{}/readyz", serve.url));
    assert_eq!(ready["checks"]["source"], true, "{ready}");
}

#[test]
fn kafka_failover_in_a_group_loses_no_window_and_gets_none_wrong() {
    let brokers = broker();
    let dir = temp_dir("kafka-failover");
    let t = Topics::new(&brokers, "failover");
    produce(&brokers, &t.telemetry, 10_000, START, 11);
    let a = t.serve(&dir);
    wait_until_within(LONG, "first instance consuming", || {
        metric(&a.url, "stampede_records_in_total") > 0
    });
    let b = t.serve(&dir);
    // The group rebalances: the second instance takes partitions from the first (hand-off).
    wait_until_within(
        LONG,
        "second instance owning and consuming partitions",
        || {
            metric(&b.url, "stampede_source_partitions") > 0
                && metric(&b.url, "stampede_records_in_total") > 0
        },
    );
    assert!(metric(&a.url, "stampede_source_partitions") < 4);
    wait_until_within(LONG, "first instance committing", || {
        metric(&a.url, "stampede_source_commits_total") > 0
    });
    // Mid-stream: the second half is being written while the first instance dies unflushed.
    let producer = {
        let (brokers, topic) = (brokers.clone(), t.telemetry.clone());
        std::thread::spawn(move || produce(&brokers, &topic, 10_000, SECOND_HALF, 12))
    };
    // The second member dies (see the module docs for why not the first).
    b.kill();
    wait_until_within(LONG, "the survivor taking every partition", || {
        metric(&a.url, "stampede_source_partitions") == 4
    });
    producer.join().unwrap();
    close_all_windows(&brokers, &t.telemetry, 4, SENTINEL);
    let (want, _) = expected(&read_topic(&brokers, &t.telemetry), &dir);
    let got = await_summaries(&brokers, &t.summaries, &want);
    assert_same(&got, &want);
    drop(a);
}

#[test]
fn kafka_sigkill_and_restart_resume_from_the_committed_checkpoint() {
    let brokers = broker();
    let dir = temp_dir("kafka-restart");
    let t = Topics::new(&brokers, "restart");
    produce(&brokers, &t.telemetry, 10_000, START, 21);
    let first = t.serve(&dir);
    wait_until_within(LONG, "committing", || {
        metric(&first.url, "stampede_source_commits_total") >= 4
    });
    first.kill();
    let second = t.serve(&dir);
    let (want, _) = t.finish(&dir);
    let got = await_summaries(&brokers, &t.summaries, &want);
    assert_same(&got, &want);
    assert!(
        metric(&second.url, "stampede_records_in_total") < 20_004,
        "the restart re-read from the committed position, not from the beginning"
    );
    // A graceful stop hands the partitions off (commits, emits no partial window) and exits 0.
    assert!(signal(second, "-TERM").success());
}

#[test]
fn kafka_broker_outage_of_20_s_is_survived_and_readyz_reports_it() {
    let dir = temp_dir("kafka-outage");
    let mut broker = PrivateBroker::start(&dir);
    let t = Topics::new(&broker.addr, "outage");
    produce(&broker.addr, &t.telemetry, 10_000, START, 31);
    let serve = t.serve(&dir);
    wait_until_within(LONG, "committing", || {
        metric(&serve.url, "stampede_source_commits_total") > 0
    });
    broker.stop();
    let ready_url = format!("{}/readyz", serve.url);
    wait_until("/readyz reporting the lost broker", || {
        let (status, body) = http_get(&ready_url);
        status == 503 && body.contains("\"source\":false")
    });
    // The outage itself: 20 s without a broker.
    std::thread::sleep(Duration::from_secs(20));
    broker.restart();
    // Longer: librdkafka reconnects with a back-off, then the group rejoins.
    wait_until_within(LONG, "/readyz recovering", || http_get(&ready_url).0 == 200);
    let (want, _) = t.finish(&dir);
    let got = await_summaries(&broker.addr, &t.summaries, &want);
    assert_same(&got, &want);
    drop(serve);
}

/// A broker of its own behind a [`Flaky`](crate::support::flaky::Flaky) proxy, which it
/// advertises: every client, the service's and the test's, goes through the proxy.
fn broker_behind_flaky(dir: &std::path::Path) -> (PrivateBroker, crate::support::flaky::Flaky) {
    let mut proxy = None;
    let broker = PrivateBroker::behind(dir, |addr| {
        let p = crate::support::flaky::Flaky::start(addr);
        let front = p.addr.to_string();
        proxy = Some(p);
        front
    });
    (broker, proxy.expect("the broker started behind the proxy"))
}

/// The broker behind a flaky network (latency, resets, a stall, a refusal, in turn) while a
/// fleet is produced (through the same network: the broker advertises the proxy): readiness
/// names the source while each lasts, the client backs off rather than storm, and in the end
/// the summary topic holds what `aggregate` computes.
///
/// The group session (30 s) outlasts each fault: a session lost in a stall meets a bug of tansu
/// 0.6.0's coordinator, which goes on electing the member id the consumer dropped as the group's
/// leader, so the rejoin never completes (librdkafka's `cgrp` log: every JoinGroup answered with
/// the old id as leader, every SyncGroup with "rebalance in progress", for minutes). What the
/// service says meanwhile is the next test's.
#[test]
fn a_flaky_network_to_kafka_loses_nothing_and_readiness_tells_the_truth() {
    let dir = temp_dir("kafka-flaky");
    let (broker, proxy) = broker_behind_flaky(&dir);
    let brokers = proxy.addr.to_string();
    let t = Topics::new(&brokers, "flaky");
    let serve = t.serve_with_session(&dir, 3_600, 30_000);
    wait_until_within(LONG, "partitions assigned", || {
        metric(&serve.url, "stampede_source_partitions") == 4
    });
    // Each phase's records are produced on a thread of their own: the producer meets the same
    // faults, and delivers once they end. One that cannot reach the cluster at its start has
    // sent nothing, and starts again.
    let mut producers = Vec::new();
    let attempts = crate::faults::tour(&proxy, &serve.url, "source", |phase| {
        let to = format!("kafka://{brokers}/{}", t.telemetry);
        producers.push(std::thread::spawn(move || loop {
            let out = stampede([
                "produce",
                "--rate",
                "max",
                "--quiet",
                "--unicorns",
                "40",
                "--msgs",
                "2400",
                "--seed",
                &(40 + phase).to_string(),
                "--start-time",
                &format!("2026-01-01 00:0{phase}:00"),
                "--faults",
                crate::support::kafka::FAULTS,
                "--to",
                &to,
            ])
            .output()
            .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                break;
            }
            assert!(
                stderr.contains("cannot reach the Kafka cluster"),
                "{stderr}"
            );
            std::thread::sleep(Duration::from_secs(1));
        }));
    });
    // Every librdkafka client keeps a connection per broker it knows, here two (the bootstrap
    // address and the broker it learnt, both through the proxy): the service's consumer, its
    // summary and checkpoint producers, and the test's producer make eight. Backing off from
    // 100 ms, doubling (with jitter) up to 10 s, each tries six or seven times in 5 s, and a
    // producer that gave up starts afresh: 40 to 60 was measured, and 60 failed runs on a busy
    // machine. A loop without backoff makes thousands.
    assert!(
        attempts <= 120,
        "{attempts} connection attempts in 5 s of resets"
    );
    for p in producers {
        p.join().unwrap();
    }
    close_all_windows(&brokers, &t.telemetry, 4, SENTINEL);
    let (want, _) = expected(&read_topic(&brokers, &t.telemetry), &dir);
    let got = await_summaries(&brokers, &t.summaries, &want);
    assert_same(&got, &want);
    assert!(signal(serve, "-TERM").success());
    drop(broker);
}

/// A stall longer than the group session (6 s) costs the member its assignment. While it holds
/// no partitions it is not ready, even once its connections are up again (a stalled link keeps
/// idle connections "up", and it used to be reported ready while it read nothing): whenever
/// `/readyz` says ready, the member owns its four partitions. That direction only: tansu 0.6.0
/// may not readmit the member at all (see the test above); that an instance whose session a
/// broker outage expired is assigned and ready again is `kafka_broker_outage_of_20_s_…`'s.
#[test]
fn a_member_that_lost_its_assignment_is_not_ready_until_it_has_one_again() {
    use crate::support::flaky::Fault;
    let dir = temp_dir("kafka-lost");
    let (broker, proxy) = broker_behind_flaky(&dir);
    let t = Topics::new(&proxy.addr.to_string(), "lost");
    let serve = t.serve(&dir);
    let readyz = || {
        let (status, body) = http_get(&format!("{}/readyz", serve.url));
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
        )
    };
    wait_until_within(LONG, "partitions assigned and ready", || {
        metric(&serve.url, "stampede_source_partitions") == 4 && readyz().0 == 200
    });
    proxy.set(Fault::Stall);
    wait_until_within(LONG, "the assignment lost in the stall", || {
        metric(&serve.url, "stampede_source_partitions") == 0
    });
    let (status, ready) = readyz();
    assert_eq!(
        (status, &ready["checks"]["source"]),
        (503, &Value::Bool(false)),
        "{ready}"
    );
    assert!(ready["reasons"]["source"].is_string(), "{ready}");
    proxy.set(Fault::None);
    // Long enough for the connections to be up again and their statistics read (every second).
    let until = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < until {
        let (status, ready) = readyz();
        if status == 200 {
            assert_eq!(
                metric(&serve.url, "stampede_source_partitions"),
                4,
                "ready with no partition: {ready}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(serve);
    drop(broker);
}

#[test]
fn a_quiet_kafka_partition_still_closes_its_windows() {
    let brokers = broker();
    let dir = temp_dir("kafka-idle");
    let t = Topics::new(&brokers, "idle");
    let serve = t.serve_idle(&dir, 1);
    wait_until_within(LONG, "partitions assigned", || {
        metric(&serve.url, "stampede_source_partitions") == 4
    });
    // One record in the last second of the previous minute, then silence: only the idle
    // timeout can move this partition's watermark past the window's end.
    let minute = stampede::time::now_ms() / 60_000 * 60_000;
    let at = stampede::time::format_status_time(minute - 1_000);
    let record = format!(
        r#"{{"Name":"Quiet","StatusTime":"{at}","Latitude":40.7,"Longitude":-73.9,"Distance":2.5,"HealthPoints":90,"MagicPoints":80}}"#
    );
    crate::support::kafka::send_to_partition(&brokers, &t.telemetry, 2, &record);
    let mut found = Vec::new();
    // Longer than the default: only the wall clock (the idle timeout) closes this window, and
    // its summary then crosses the broker.
    wait_until_within(LONG, "the quiet window's summary", || {
        found = read_topic(&brokers, &t.summaries)
            .into_iter()
            .flatten()
            .collect();
        !found.is_empty()
    });
    let s: Value = serde_json::from_slice(&found[0].payload).unwrap();
    assert_eq!(s["Name"], "Quiet");
    assert_eq!(
        s["StatusTime"],
        stampede::time::format_status_time(minute - 60_000)
    );
    assert_eq!(
        (s["Records"].as_u64(), s["Revision"].as_u64()),
        (Some(1), Some(0))
    );
    drop(serve);
}

#[test]
fn kafka_cli_errors_are_clear() {
    let brokers = broker();
    let run = |args: &[&str]| stampede(args).output().unwrap();
    let missing = format!("kafka://{brokers}/{}", unique("no-such-topic"));
    let o = run(&["produce", "--msgs", "1", "--to", &missing]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
    let o = run(&[
        "produce",
        "--msgs",
        "1",
        "--to",
        "kafka://127.0.0.1:1/wildrydes",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach the Kafka cluster"));

    // consume prints what produce wrote, as indented JSON.
    let topic = unique("consume");
    create_topic(&brokers, &topic, 2);
    let url = format!("kafka://{brokers}/{topic}");
    let o = run(&[
        "produce",
        "--name",
        "Shadowfax",
        "--msgs",
        "5",
        "--rate",
        "max",
        "--to",
        &url,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&[
        "consume",
        "--from",
        &url,
        "--from-beginning",
        "--count",
        "5",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(text.matches("\"Name\": \"Shadowfax\"").count(), 5, "{text}");
    assert!(text.starts_with("{\n  \""), "{text}");
}

#[test]
fn an_option_librdkafka_refuses_is_bad_config_naming_its_key() {
    let dir = temp_dir("kafka-bad-option");
    let config = dir.join("stampede.toml");
    std::fs::write(
        &config,
        "[source]\nkind = \"kafka\"\n[source.kafka_options]\n\"no.such.option\" = \"1\"\n",
    )
    .unwrap();
    let o = stampede(["serve", "--config", config.to_str().unwrap()])
        .env("STAMPEDE_WEB_LISTEN", "127.0.0.1:0")
        .env("STAMPEDE_STORE_PATH", dir.join("store"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("source.kafka_options.\"no.such.option\""),
        "{stderr}"
    );
}

/// The DynamoDB store hangs (every call to its table held unanswered) while telemetry keeps
/// arriving, until the engines are full and then 10 s more — past `max.poll.interval.ms` (3 s):
/// the source pauses the busy partitions instead of blocking its poll loop, so the member is
/// never expelled and no partition changes owner; `/readyz` says the store is the problem; once
/// it answers again, the summaries equal `aggregate`.
#[test]
fn a_store_stalled_past_max_poll_interval_moves_no_partition_and_loses_nothing() {
    use crate::support::faults::FaultProxy;

    let brokers = broker();
    let dir = temp_dir("kafka-stalled-store");
    let t = Topics::new(&brokers, "stalled");
    let dynamodb = FaultProxy::passthrough(&Aws::DynamoDb.endpoint());
    let table = unique("UnicornSensorData");
    let config = ServeConfig {
        brokers: &t.brokers,
        topic: &t.telemetry,
        group: &t.group,
        summaries: &t.summaries,
        dead_letters: &t.dead_letters,
        idle_secs: 3_600,
    }
    .write(&dir);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "\"session.timeout.ms\" = \"6000\"",
        "\"session.timeout.ms\" = \"5000\"\n\"max.poll.interval.ms\" = \"5000\"",
    );
    std::fs::write(&config, text).unwrap();
    // DynamoDB through the proxy, not the emulator itself.
    let mut env = aws::env(&[]);
    env.extend([
        (Aws::DynamoDb.endpoint_var(), dynamodb.url.clone()),
        ("STAMPEDE_STORE_KIND", "dynamodb".into()),
        ("STAMPEDE_STORE_TABLE", table.clone()),
        ("STAMPEDE_STORE_CREATE_TABLES", "true".into()),
    ]);
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let serve = start_service_with(
        &["serve", "--config", config.to_str().unwrap()],
        &dir.join("store"),
        &env_ref,
    );
    produce(&brokers, &t.telemetry, 4_000, START, 31);
    wait_until_within(LONG, "all four partitions consumed", || {
        metric(&serve.url, "stampede_source_partitions") == 4
            && metric(&serve.url, "stampede_records_in_total") >= 4_000
    });
    let taken = metric(&serve.url, "stampede_source_taken_total");

    dynamodb.hold(&table);
    // Telemetry keeps coming, in small batches (a live fleet at 2,000 records/s), until the
    // stall is over: the engines fill their queues, however fast this machine is.
    let mut producer = stampede(["produce", "--quiet", "--unicorns", "40", "--msgs", "400000"])
        .args(["--rate", "50", "--seed", "32", "--start-time", SECOND_HALF])
        .args(["--faults", crate::support::kafka::FAULTS])
        .args(["--to", &format!("kafka://{brokers}/{}", t.telemetry)])
        .spawn()
        .unwrap();
    wait_until("/readyz names the store", || {
        let (status, body) = http_get(&format!("{}/readyz", serve.url));
        let v: Value = serde_json::from_str(&body).unwrap();
        status == 503 && v["checks"]["store"] == false && v["checks"]["source"] == true
    });
    // Longer: the engines' queues fill first, at a live fleet's pace.
    wait_until_within(120, "a partition paused behind the stalled store", || {
        metric(&serve.url, "stampede_source_paused_total") > 0
    });
    // Paused for twice max.poll.interval.ms and two sessions: a blocked poll loop would have
    // left the group by now. (Not tighter: a busy broker answering a heartbeat late must not
    // pass for a rebalance caused by the stall.)
    let paused = std::time::Instant::now();
    while paused.elapsed() < Duration::from_secs(10) {
        assert_eq!(metric(&serve.url, "stampede_source_partitions"), 4);
        std::thread::sleep(Duration::from_millis(250));
    }
    dynamodb.release();
    producer.kill().unwrap();
    producer.wait().unwrap();
    close_all_windows(&brokers, &t.telemetry, 4, SENTINEL);
    let (want, _) = expected(&read_topic(&brokers, &t.telemetry), &dir);
    assert_same(&await_summaries(&brokers, &t.summaries, &want), &want);
    let mut got = crate::support::kafka::Summaries::new();
    wait_until_within(LONG, "every window in DynamoDB", || {
        got = crate::support::kinesis::http_get_summaries(&serve.url);
        got == want
    });
    assert_eq!(
        metric(&serve.url, "stampede_source_taken_total"),
        taken,
        "no partition was reassigned during or after the stall"
    );
}
