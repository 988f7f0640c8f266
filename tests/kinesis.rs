//! Kinesis against kinesalite (an emulator that validates like AWS), started by
//! `scripts/components/aws`; its address is in `STAMPEDE_TEST_KINESIS`: `produce --to kinesis://`
//! and `consume --from kinesis://`, and the Kinesis summary stream of `serve`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::support::aws::{self, Aws};
use crate::support::kafka::{keep_newest, FAULTS};
use crate::support::kinesis::{
    await_active, close_all_windows, create_stream, http_get_summaries, read_all, read_shards,
};
use crate::support::poll::{wait_until, wait_until_within, LONG, LONGEST};
use crate::support::process::{
    aggregate_ordered, ingest_ordered_then_stop, metric, produce_fleet, signal, start_service_with,
};

/// What `stampede` needs for a Kinesis source or stream: Kinesis, and DynamoDB for its leases.
const KINESIS: &[Aws] = &[Aws::Kinesis, Aws::DynamoDb];

/// `stampede ARGS…` reaching the emulators, output captured.
fn stampede(args: &[&str]) -> std::process::Output {
    stampede_with(args, &aws::env(KINESIS))
}

/// `stampede ARGS…` with the environment `env`, output captured.
fn stampede_with(args: &[&str], env: &[(&str, String)]) -> std::process::Output {
    crate::support::process::stampede(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

#[test]
fn produce_and_consume_through_kinesis() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = rt.block_on(aws::kinesis());
    let stream = crate::support::kafka::unique("wildrydes");
    create_stream(&rt, &c, &stream, 2);
    let url = format!("kinesis://{stream}");
    let o = stampede(&[
        "produce",
        "--unicorns",
        "3",
        "--msgs",
        "1200",
        "--rate",
        "max",
        "--to",
        &url,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let records = read_all(&rt, &c, &stream);
    assert_eq!(records.len(), 1200);
    let o = stampede(&[
        "consume",
        "--from",
        &url,
        "--from-beginning",
        "--count",
        "1200",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(text.matches("\"StatusTime\":").count(), 1200);
    assert!(text.starts_with("{\n  \""), "indented JSON");

    let o = stampede(&["produce", "--msgs", "1", "--to", "kinesis://no-such-stream"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
}

#[test]
fn the_kinesis_summary_stream_carries_what_aggregate_computes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = rt.block_on(aws::kinesis());
    let stream = crate::support::kafka::unique("wildrydes-summary");
    create_stream(&rt, &c, &stream, 2);
    let dir = crate::support::service::temp_dir("kinesis-summary");
    let want = aggregate_ordered(13, &dir);
    let mut env = aws::env(KINESIS);
    env.push(("STAMPEDE_SUMMARY_STREAM_KIND", "kinesis".into()));
    env.push(("STAMPEDE_SUMMARY_STREAM_STREAM", stream.clone()));
    // Stopping flushes every window, and the stream task publishes them before exiting.
    ingest_ordered_then_stop(13, &dir.join("store"), &env);

    let mut got = crate::support::kafka::Summaries::new();
    for data in read_all(&rt, &c, &stream) {
        keep_newest(&mut got, serde_json::from_slice(&data).unwrap());
    }
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
}

fn produce_to(stream: &str, msgs: u64, start: &str, seed: u64) {
    produce_with(stream, (40, msgs), start, seed, FAULTS, &aws::env(KINESIS));
}

fn produce_with(
    stream: &str,
    fleet: (u32, u64),
    start: &str,
    seed: u64,
    faults: &str,
    env: &[(&str, String)],
) {
    produce_fleet(
        &format!("kinesis://{stream}"),
        fleet,
        start,
        seed,
        faults,
        env,
    );
}

/// The streams and tables of one Kinesis → serve → DynamoDB test.
struct Setup {
    rt: tokio::runtime::Runtime,
    c: aws_sdk_kinesis::Client,
    telemetry: String,
    summaries: String,
    dlq: String,
    dir: crate::support::service::TempDir,
    env: Vec<(&'static str, String)>,
}

impl Setup {
    fn new(name: &str) -> Setup {
        Setup::with_shards(name, 4)
    }

    fn with_shards(name: &str, shards: i32) -> Setup {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let c = rt.block_on(aws::kinesis());
        let telemetry = crate::support::kafka::unique("wildrydes");
        let summaries = crate::support::kafka::unique("wildrydes-summary");
        let dlq = crate::support::kafka::unique("wildrydes-dlq");
        create_stream(&rt, &c, &telemetry, shards);
        create_stream(&rt, &c, &summaries, 2);
        create_stream(&rt, &c, &dlq, 1);
        let table = crate::support::kafka::unique("UnicornSensorData");
        let leases = crate::support::kafka::unique("stampede-leases");
        let mut env = aws::env(KINESIS);
        for (k, v) in [
            ("STAMPEDE_SOURCE_KIND", "kinesis"),
            ("STAMPEDE_SOURCE_STREAM", telemetry.as_str()),
            ("STAMPEDE_SOURCE_LEASE_TABLE", leases.as_str()),
            ("STAMPEDE_SOURCE_DEAD_LETTERS", dlq.as_str()),
            ("STAMPEDE_STORE_KIND", "dynamodb"),
            ("STAMPEDE_STORE_TABLE", table.as_str()),
            ("STAMPEDE_STORE_CREATE_TABLES", "true"),
            ("STAMPEDE_SUMMARY_STREAM_KIND", "kinesis"),
            ("STAMPEDE_SUMMARY_STREAM_STREAM", summaries.as_str()),
            ("STAMPEDE_WINDOW_IDLE_TIMEOUT_SECS", "3600"),
        ] {
            env.push((k, v.to_owned()));
        }
        Setup {
            rt,
            c,
            telemetry,
            summaries,
            dlq,
            dir: crate::support::service::temp_dir(name),
            env,
        }
    }

    /// Two instances share the 4-shard stream (the first takes every shard, then two each); the
    /// first is SIGKILLed once it has checkpointed. Returns the second.
    fn share_then_kill_the_first(&self) -> crate::support::process::Running {
        let a = self.serve("a");
        wait_until_within(LONG, "first instance owning every shard", || {
            metric(&a.url, "stampede_source_partitions") == 4
        });
        let b = self.serve("b");
        wait_until_within(LONG, "the second instance taking its share", || {
            metric(&b.url, "stampede_source_partitions") == 2
                && metric(&a.url, "stampede_source_partitions") == 2
        });
        wait_until_within(LONG, "the first instance checkpointing", || {
            metric(&a.url, "stampede_source_commits_total") > 0
        });
        a.kill();
        b
    }

    /// Puts `lines` (partition key, record) in one `PutRecords` call: each shard's reader gets
    /// its records in one batch, so the first checkpoint after them covers them all.
    fn put(&self, lines: Vec<(String, String)>) {
        let entries = lines
            .into_iter()
            .map(|(name, l)| {
                aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                    .partition_key(name)
                    .data(aws_sdk_kinesis::primitives::Blob::new(l))
                    .build()
                    .unwrap()
            })
            .collect();
        let out = self
            .rt
            .block_on(
                self.c
                    .put_records()
                    .stream_name(&self.telemetry)
                    .set_records(Some(entries))
                    .send(),
            )
            .unwrap();
        assert_eq!(out.failed_record_count(), Some(0));
    }

    /// Two instances on a 2-shard stream with alert e-mail: the first takes both shards and
    /// subscribes a new address of `who` (confirmed), the second takes one of them; then eight
    /// unicorns fire at once, every change is mailed and both instances commit past them.
    /// Returns the instances, the address and the unicorns' names.
    fn two_instances_fired(
        &self,
        who: &str,
    ) -> (
        crate::support::process::Running,
        crate::support::process::Running,
        String,
        Vec<String>,
    ) {
        use crate::alerts::{alert_ids, at, confirm_by_mail, subscribe, unique_address};
        use crate::support::mail::await_mails_within;
        use crate::support::service::line;
        let a = self.serve("a");
        wait_until_within(LONG, "the first instance owning both shards", || {
            metric(&a.url, "stampede_source_partitions") == 2
        });
        let addr: std::net::SocketAddr = a.url.trim_start_matches("http://").parse().unwrap();
        let ops = unique_address(who);
        self.rt.block_on(async {
            let (status, v) = subscribe(addr, serde_json::json!({"email": ops})).await;
            assert_eq!(status.as_u16(), 202, "{v}");
            confirm_by_mail(addr, &ops).await;
        });
        let b = self.serve("b");
        wait_until_within(LONG, "one shard each", || {
            metric(&b.url, "stampede_source_partitions") == 1
                && metric(&a.url, "stampede_source_partitions") == 1
        });
        let names: Vec<String> = (0..8).map(|i| format!("U{i}")).collect();
        let commits = (
            metric(&a.url, "stampede_source_commits_total"),
            metric(&b.url, "stampede_source_commits_total"),
        );
        self.put(
            names
                .iter()
                .map(|n| (n.clone(), line(n, &at(1), 1.0, 99, 150)))
                .collect(),
        );
        await_mails_within(LONG, &ops, "every unicorn's alert firing", |m| {
            alert_ids(m).len() == names.len()
        });
        // The checkpoints behind those records commit once their changes are mailed.
        wait_until("both instances checkpointing after them", || {
            metric(&a.url, "stampede_source_commits_total") > commits.0
                && metric(&b.url, "stampede_source_commits_total") > commits.1
        });
        (a, b, ops, names)
    }

    /// Sends the service's (and `produce`'s) AWS calls through these endpoints.
    fn route_through(&mut self, kinesis: &str, dynamodb: &str) {
        for (k, v) in &mut self.env {
            match *k {
                "AWS_ENDPOINT_URL_KINESIS" => *v = kinesis.to_owned(),
                "AWS_ENDPOINT_URL_DYNAMODB" => *v = dynamodb.to_owned(),
                _ => {}
            }
        }
    }

    fn serve(&self, name: &str) -> crate::support::process::Running {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        start_service_with(&["serve"], &self.dir.join(name), &env)
    }

    /// Closes every window, then checks DynamoDB (through `url`'s API), the summary stream and
    /// the dead-letter stream against `aggregate` run on each shard's records.
    fn check(&self, url: &str) {
        let (rt, c) = (&self.rt, &self.c);
        close_all_windows(rt, c, &self.telemetry);
        let partitions: Vec<Vec<crate::support::kafka::Msg>> = read_shards(rt, c, &self.telemetry)
            .into_iter()
            .enumerate()
            .map(|(i, records)| {
                records
                    .into_iter()
                    .enumerate()
                    .map(|(n, payload)| crate::support::kafka::Msg {
                        partition: i as i32,
                        offset: n as i64,
                        key: None,
                        payload,
                        headers: BTreeMap::new(),
                    })
                    .collect()
            })
            .collect();
        let (want, rejected) = crate::support::kafka::expected(&partitions, &self.dir);
        let mut got = crate::support::kafka::Summaries::new();
        wait_until_within(LONGEST, "every window in DynamoDB", || {
            got = http_get_summaries(url);
            got == want
        });
        crate::support::kafka::assert_same(&got, &want);
        // The summary stream carries the same, highest revision per window. Each output
        // delivers on its own, so the stream may still be behind the table: await it.
        let mut streamed = crate::support::kafka::Summaries::new();
        wait_until_within(LONG, "every window in the summary stream", || {
            streamed.clear();
            for data in read_all(rt, c, &self.summaries) {
                keep_newest(&mut streamed, serde_json::from_slice(&data).unwrap());
            }
            streamed == want
        });
        crate::support::kafka::assert_same(&streamed, &want);
        // Every rejected record is in the dead-letter stream with its reason (at least once:
        // records re-read after a take-over are dead-lettered again).
        let rejected: std::collections::BTreeSet<(String, Vec<u8>)> =
            rejected.into_iter().collect();
        let mut dead = std::collections::BTreeSet::new();
        wait_until_within(LONG, "every rejected record dead-lettered", || {
            dead = read_all(rt, c, &self.dlq)
                .into_iter()
                .map(|d| {
                    let v: Value = serde_json::from_slice(&d).unwrap();
                    (
                        v["reason"].as_str().unwrap().to_owned(),
                        v["raw"].as_str().unwrap().as_bytes().to_vec(),
                    )
                })
                .collect();
            dead == rejected
        });
        assert_eq!(dead, rejected);
    }
}

/// The streams go with the test: the emulator, like AWS, limits the shards of an account.
impl Drop for Setup {
    fn drop(&mut self) {
        for stream in [&self.telemetry, &self.summaries, &self.dlq] {
            let _ = self
                .rt
                .block_on(self.c.delete_stream().stream_name(stream).send());
        }
    }
}

#[test]
fn two_instances_share_shards_through_leases_and_a_sigkilled_ones_are_taken_over() {
    let t = Setup::new("kinesis-leases");
    produce_to(&t.telemetry, 10_000, "2026-01-01 00:00:00", 41);
    let b = t.share_then_kill_the_first();
    produce_to(&t.telemetry, 10_000, "2026-01-01 00:04:10", 42);
    wait_until_within(
        LONG,
        "the survivor taking the dead instance's shards",
        || metric(&b.url, "stampede_source_partitions") == 4,
    );
    t.check(&b.url);
    drop(b);
}

#[test]
fn a_sigkilled_kinesis_instance_restarts_from_its_checkpoints() {
    let t = Setup::new("kinesis-restart");
    produce_to(&t.telemetry, 10_000, "2026-01-01 00:00:00", 51);
    let first = t.serve("first");
    wait_until_within(LONG, "checkpointing every shard", || {
        metric(&first.url, "stampede_source_commits_total") >= 4
    });
    first.kill();
    // The dead instance's leases expire (10 s unchanged), then the new one takes them all.
    let second = t.serve("second");
    produce_to(&t.telemetry, 10_000, "2026-01-01 00:04:10", 52);
    wait_until_within(LONG, "the restarted instance owning every shard", || {
        metric(&second.url, "stampede_source_partitions") == 4
    });
    t.check(&second.url);
    // A graceful stop hands the shards off and releases the leases.
    assert!(signal(second, "-TERM").success());
}

/// Splits `shard` of `stream` in the middle of its hash key range and waits until the stream is
/// active again.
fn split(rt: &tokio::runtime::Runtime, c: &aws_sdk_kinesis::Client, stream: &str, shard: &str) {
    rt.block_on(
        c.split_shard()
            .stream_name(stream)
            .shard_to_split(shard)
            .new_starting_hash_key((1u128 << 127).to_string())
            .send(),
    )
    .unwrap();
    await_active(rt, c, stream, "after the split");
}

/// A minute that spans a split: half of it in the parent shard, half in a child. The child
/// resumes the parent's engine and re-reads the parent's tail (its own unicorns only), so every
/// minute is summarised whole: what `aggregate` computes on the parent's records followed by
/// the child's, for the unicorns of that child. The instance is SIGKILLed while the children
/// still need the tail (they cannot checkpoint yet), so the next one re-reads it too.
#[test]
fn a_minute_that_spans_a_shard_split_is_summarised_whole() {
    let t = Setup::with_shards("kinesis-split", 1);
    let produce = |msgs: u64, start: &str, seed: u64| {
        produce_with(&t.telemetry, (20, msgs), start, seed, "", &t.env);
    };
    // 150 s of telemetry: minute 00:00 is final (so the parent checkpoints past it), 00:02 is
    // open when the shard is split.
    produce(3000, "2026-01-01 00:00:00", 71);
    let first = t.serve("first");
    wait_until_within(LONG, "the parent shard checkpointed", || {
        metric(&first.url, "stampede_source_commits_total") > 0
    });
    split(&t.rt, &t.c, &t.telemetry, "shardId-000000000000");
    // Up to 00:03:19: minute 00:02 can still change (until 00:04:00), so the children keep
    // needing the parent's tail and write no checkpoint.
    produce(1000, "2026-01-01 00:02:30", 72);
    wait_until_within(LONG, "both children owned", || {
        metric(&first.url, "stampede_source_partitions") == 2
    });
    first.kill();
    let second = t.serve("second");
    produce(2000, "2026-01-01 00:03:20", 73);
    wait_until_within(LONG, "both children taken over", || {
        metric(&second.url, "stampede_source_partitions") == 2
    });
    close_all_windows(&t.rt, &t.c, &t.telemetry);

    let shards = read_shards(&t.rt, &t.c, &t.telemetry);
    let [parent, children @ ..] = shards.as_slice() else {
        panic!("no shards");
    };
    assert_eq!(children.len(), 2);
    let mut want = crate::support::kafka::Summaries::new();
    for (i, child) in children.iter().enumerate() {
        let names: std::collections::BTreeSet<String> = child
            .iter()
            .map(|d| {
                serde_json::from_slice::<Value>(d).unwrap()["Name"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let msgs = parent
            .iter()
            .chain(child)
            .enumerate()
            .map(|(n, payload)| crate::support::kafka::Msg {
                partition: i as i32,
                offset: n as i64,
                key: None,
                payload: payload.clone(),
                headers: BTreeMap::new(),
            })
            .collect();
        let (summaries, _) = crate::support::kafka::expected(&[msgs], &t.dir);
        want.extend(
            summaries
                .into_iter()
                .filter(|((name, _), _)| names.contains(name)),
        );
    }
    // Every unicorn is in one child, and its minute 00:02 is whole: 60 records, 30 before the
    // split and 30 after.
    assert_eq!(
        want.keys()
            .map(|(n, _)| n)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        20
    );
    assert!(want
        .iter()
        .filter(|((_, t), _)| t == "2026-01-01 00:02:00")
        .all(|(_, v)| v["Records"] == 60));
    let mut got = crate::support::kafka::Summaries::new();
    wait_until_within(LONGEST, "every window in DynamoDB", || {
        got = http_get_summaries(&second.url);
        got == want
    });
    crate::support::kafka::assert_same(&got, &want);
    assert!(signal(second, "-TERM").success());
}

/// A merge: each parent flushes at its end (its child cannot continue two watermarks) and the
/// child starts fresh once both are finished. With no minute spanning the merge, every shard's
/// summaries are exactly `aggregate`'s on that shard.
#[test]
fn a_merged_stream_is_read_after_both_parents_end() {
    let t = Setup::with_shards("kinesis-merge", 2);
    // Minutes 00:00 and 00:01 in the parents, 00:03 and 00:04 in the child.
    produce_with(
        &t.telemetry,
        (20, 2400),
        "2026-01-01 00:00:00",
        81,
        "",
        &t.env,
    );
    let s = t.serve("merge");
    wait_until_within(LONG, "both parents owned", || {
        metric(&s.url, "stampede_source_partitions") == 2
    });
    t.rt.block_on(
        t.c.merge_shards()
            .stream_name(&t.telemetry)
            .shard_to_merge("shardId-000000000000")
            .adjacent_shard_to_merge("shardId-000000000001")
            .send(),
    )
    .unwrap();
    await_active(&t.rt, &t.c, &t.telemetry, "after the merge");
    produce_with(
        &t.telemetry,
        (20, 2400),
        "2026-01-01 00:03:00",
        82,
        "",
        &t.env,
    );
    wait_until_within(LONG, "the child owned, the parents done", || {
        metric(&s.url, "stampede_source_partitions") == 1
            && metric(&s.url, "stampede_records_in_total") >= 4800
    });
    t.check(&s.url);
    assert!(signal(s, "-TERM").success());
}

/// Dead letters carry up to 64 KiB of the raw record each: 110 of them (7 MiB) do not fit one
/// `PutRecords` call (5 MiB), and all reach the dead-letter stream.
#[test]
fn large_dead_letters_all_reach_the_kinesis_dead_letter_stream() {
    let t = Setup::with_shards("kinesis-large-dlq", 1);
    let s = t.serve("dlq");
    let line = format!(r#"{{"Name":"x","Pad":"{}"}}"#, "p".repeat(70_000));
    let body = vec![line; 110].join("\n");
    let (status, reply) =
        crate::support::process::http_post(&format!("{}/ingest", s.url), body.as_bytes());
    assert_eq!(status, 200, "{reply}");
    let mut dead = Vec::new();
    wait_until_within(LONG, "110 dead letters in the stream", || {
        dead = read_all(&t.rt, &t.c, &t.dlq);
        dead.len() >= 110
    });
    assert_eq!(dead.len(), 110);
    for d in &dead {
        let v: Value = serde_json::from_slice(d).unwrap();
        assert_eq!(v["reason"], "too_large");
        assert_eq!(v["raw"].as_str().map(str::len), Some(64 << 10));
    }
    assert!(signal(s, "-TERM").success());
}

/// AWS throttles, leaves batch items unprocessed and expires iterators; the emulators never do.
/// Here a proxy in front of each emulator injects those answers (see `support::faults`) into
/// every call of `produce`, the Kinesis source, the lease table, the DynamoDB store and the
/// summary stream: the results are still exactly `aggregate`'s, nothing lost or doubled.
#[test]
fn throttling_unprocessed_keys_and_expired_iterators_lose_nothing() {
    use crate::support::faults::FaultProxy;
    let mut t = Setup::new("kinesis-faults");
    let kinesis = FaultProxy::start(&Aws::Kinesis.endpoint());
    let dynamodb = FaultProxy::start(&Aws::DynamoDb.endpoint());
    t.route_through(&kinesis.url, &dynamodb.url);
    // One refused record in three is sent again by `produce`: all arrive, once.
    produce_with(
        &t.telemetry,
        (40, 10_000),
        "2026-01-01 00:00:00",
        61,
        FAULTS,
        &t.env,
    );
    let total: usize = read_shards(&t.rt, &t.c, &t.telemetry)
        .iter()
        .map(Vec::len)
        .sum();
    assert_eq!(total, 10_000);
    let s = t.serve("faults");
    wait_until_within(LONG, "every shard owned", || {
        metric(&s.url, "stampede_source_partitions") == 4
    });
    produce_with(
        &t.telemetry,
        (40, 10_000),
        "2026-01-01 00:04:10",
        62,
        FAULTS,
        &t.env,
    );
    t.check(&s.url);
    let injected = kinesis
        .injected()
        .into_iter()
        .chain(dynamodb.injected())
        .collect::<BTreeMap<_, _>>();
    eprintln!("faults injected: {injected:?}");
    for kind in [
        "GetRecords throttled",
        "GetRecords iterator expired",
        "GetRecords internal failure",
        "PutRecords records refused",
        "BatchGetItem keys unprocessed",
        "PutItem throttled",
        "PutItem internal error",
        "UpdateItem throttled",
        "Scan throttled",
    ] {
        assert!(
            injected.get(kind).is_some_and(|n| *n > 0),
            "no {kind} was injected: {injected:?}"
        );
    }
    assert!(signal(s, "-TERM").success());
}

#[test]
fn a_missing_telemetry_stream_is_a_clear_error_naming_its_key() {
    let dir = crate::support::service::temp_dir("kinesis-missing-stream");
    let mut env = aws::env(KINESIS);
    for (k, v) in [
        ("STAMPEDE_SOURCE_KIND", "kinesis"),
        ("STAMPEDE_SOURCE_STREAM", "no-such-telemetry"),
        ("STAMPEDE_SOURCE_DEAD_LETTERS", ""),
        ("STAMPEDE_STORE_CREATE_TABLES", "true"),
        ("STAMPEDE_WEB_LISTEN", "127.0.0.1:0"),
    ] {
        env.push((k, v.to_owned()));
    }
    env.push(("STAMPEDE_STORE_PATH", dir.display().to_string()));
    let o = stampede_with(&["serve"], &env);
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("source.stream: stream \"no-such-telemetry\" does not exist"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_endpoint_is_retried_with_a_clear_message() {
    use std::io::BufRead;
    let dir = crate::support::service::temp_dir("kinesis-unreachable");
    // No emulator: an endpoint where nothing listens.
    let mut child = crate::support::process::stampede(["serve"])
        .envs(aws::env(&[]))
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
        .env("STAMPEDE_STORE_KIND", "dynamodb")
        .env("STAMPEDE_STORE_PATH", &dir)
        .env("STAMPEDE_WEB_LISTEN", "127.0.0.1:0")
        .env("STAMPEDE_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.contains("DynamoDB not reachable; retrying"),
        "{first}"
    );
    assert!(first.contains("UnicornSensorData"), "{first}");
    let _ = child.kill();
    let _ = child.wait();
}

/// The store hangs (every call to its table held unanswered) for 25 s, longer than a lease
/// (10 s), while two instances share four shards and telemetry keeps arriving: the readers keep
/// renewing their leases, so no shard changes owner; `/readyz` says the store is the problem;
/// once it answers again, nothing is lost and DynamoDB equals `aggregate`.
#[test]
fn a_store_stalled_longer_than_a_lease_moves_no_shard_and_loses_nothing() {
    use crate::support::faults::FaultProxy;
    use crate::support::process::http_get;

    let mut setup = Setup::new("stalled-store");
    let dynamodb = FaultProxy::passthrough(&Aws::DynamoDb.endpoint());
    setup.route_through(&Aws::Kinesis.endpoint(), &dynamodb.url);
    let table = setup
        .env
        .iter()
        .find(|(k, _)| *k == "STAMPEDE_STORE_TABLE")
        .map(|(_, v)| v.clone())
        .unwrap();
    produce_to(&setup.telemetry, 4_000, "2018-03-18 03:20:00", 21);
    let a = setup.serve("a");
    let b = setup.serve("b");
    let owned = |url: &str| metric(url, "stampede_source_partitions");
    let taken = |url: &str| metric(url, "stampede_source_taken_total");
    wait_until_within(LONG, "two shards each", || {
        owned(&a.url) == 2 && owned(&b.url) == 2
    });
    let taken_before = (taken(&a.url), taken(&b.url));

    dynamodb.hold(&table);
    let stalled = std::time::Instant::now();
    produce_to(&setup.telemetry, 4_000, "2018-03-18 03:24:00", 22);
    // Within 20 s (not the default): the stall lasts 25 s, and must be sampled below.
    wait_until_within(20, "/readyz names the store", || {
        let (status, body) = http_get(&format!("{}/readyz", a.url));
        let v: Value = serde_json::from_str(&body).unwrap();
        status == 503 && v["checks"]["store"] == false && v["checks"]["source"] == true
    });
    // Sampled over the whole stall: each instance keeps its two shards.
    while stalled.elapsed() < std::time::Duration::from_secs(25) {
        assert_eq!((owned(&a.url), owned(&b.url)), (2, 2), "a shard moved");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(dynamodb.injected()["requests held"] > 0);
    dynamodb.release();

    setup.check(&a.url);
    assert_eq!(
        (taken(&a.url), taken(&b.url)),
        taken_before,
        "no lease was taken during or after the stall"
    );
    wait_until("/readyz recovers", || {
        http_get(&format!("{}/readyz", a.url)).0 == 200
    });
}

/// `PutRecords` refuses some records of a call while writing the others (here: every third,
/// through the fault proxy). The outputs' `put_all` keeps each partition key's records in
/// order regardless — one unicorn's summaries must not overtake each other — and sends every
/// record exactly once. The loose order of the producer is shown reordering the same input, so
/// the check is one that would catch it.
#[test]
fn put_all_keeps_each_keys_order_across_partial_failures() {
    use aws_sdk_kinesis::primitives::Blob;
    use aws_sdk_kinesis::types::PutRecordsRequestEntry;
    use stampede::clients::kinesis::{put_all, KeyOrder};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let direct = rt.block_on(aws::kinesis());
    let proxy = crate::support::faults::FaultProxy::start(&Aws::Kinesis.endpoint());
    let faulty = rt.block_on(aws::client_at(&proxy.url, aws_sdk_kinesis::Client::new));
    let mut orders = Vec::new();
    for order in [KeyOrder::Kept, KeyOrder::Loose] {
        let stream = crate::support::kafka::unique("ordered");
        create_stream(&rt, &direct, &stream, 1);
        // Three keys, twenty records each, interleaved: a0 b0 c0 a1 b1 c1 …
        let mut entries: Vec<PutRecordsRequestEntry> = (0..20)
            .flat_map(|seq| ["a", "b", "c"].map(move |key| (key, seq)))
            .map(|(key, seq)| {
                PutRecordsRequestEntry::builder()
                    .partition_key(key)
                    .data(Blob::new(format!("{key}:{seq:02}")))
                    .build()
                    .unwrap()
            })
            .collect();
        let sent = rt
            .block_on(put_all(&faulty, &stream, &mut entries, order))
            .unwrap();
        assert_eq!(sent, 60);
        let written: Vec<String> = read_all(&rt, &direct, &stream)
            .into_iter()
            .map(|d| String::from_utf8(d).unwrap())
            .collect();
        let mut sorted = written.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!((written.len(), sorted.len()), (60, 60), "each record once");
        let in_order = ["a", "b", "c"].iter().all(|key| {
            let seqs: Vec<&String> = written.iter().filter(|w| w.starts_with(key)).collect();
            seqs.windows(2).all(|w| w[0] < w[1])
        });
        orders.push(in_order);
    }
    assert!(
        proxy
            .injected()
            .get("PutRecords records refused")
            .is_some_and(|n| *n > 0),
        "the proxy refused records"
    );
    assert_eq!(orders, [true, false], "kept, and loose for contrast");
}

/// Two instances share two shards and a DynamoDB store (and so the built-in subscriptions);
/// one is SIGKILLed with resolutions waiting for their round. The survivor takes its shard
/// over, resumes its alert state from the lease's checkpoint and mails exactly what the dead
/// one had not: every change reaches the subscriber once.
#[test]
fn alert_mails_survive_a_shard_moving_to_another_instance_exactly_once() {
    use crate::alerts::{alert_ids, at, id, once};
    use crate::support::mail::{await_mails_within, mails_to, smtp_server};
    use crate::support::service::line;
    let mut t = Setup::with_shards("kinesis-alerts", 2);
    let subscriptions = crate::support::kafka::unique("stampede-subscriptions");
    t.env
        .push(("STAMPEDE_STORE_SUBSCRIPTION_TABLE", subscriptions));
    t.env.push((
        "STAMPEDE_ALERTS_SMTP_SERVER",
        format!("smtp://{}", smtp_server()),
    ));
    // Long: the resolutions below are still waiting for their round when the kill comes.
    t.env
        .push(("STAMPEDE_ALERTS_GROUP_INTERVAL_SECS", "30".into()));
    let (a, b, ops, names) = t.two_instances_fired("shards");
    let fired: Vec<String> = names.iter().map(|n| id("low-health", n, 1)).collect();
    let put = |lines| t.put(lines);
    // Every unicorn recovers; the mails wait for the next round, 30 s away.
    put(names
        .iter()
        .map(|n| (n.clone(), line(n, &at(10), 1.0, 106, 150)))
        .collect());
    wait_until("the first instance's resolutions made", || {
        metric(&a.url, "stampede_alerts_pending") > 0
    });
    a.kill();
    wait_until_within(
        LONG,
        "the survivor taking the dead instance's shard",
        || metric(&b.url, "stampede_source_partitions") == 2,
    );
    let resolved: Vec<String> = names.iter().map(|n| id("low-health", n, 10)).collect();
    let want = once(&[fired, resolved].concat());
    // Longest: the dead instance's lease must expire, then its resolutions wait for a round.
    let mails = await_mails_within(LONGEST, &ops, "every change mailed", |m| {
        alert_ids(m).len() == want.len()
    });
    wait_until("nothing pending", || {
        metric(&b.url, "stampede_alerts_pending") == 0
    });
    assert_eq!(alert_ids(&mails_to(&ops)), want, "each change exactly once");
    drop(mails);
    drop(b);
}

/// Two instances share a 2-shard stream (DynamoDB store, alerts by SNS and by e-mail, the
/// archive on S3). One is paused (SIGSTOP) past its lease while its resolutions wait for their
/// round: the other takes its shard, re-reads it from the last checkpoint and makes them again;
/// the paused one wakes still holding them, and takes a shard back to rebalance. Every change
/// reaches each subscriber once, by mail and on SNS; every window equals `aggregate`'s; every
/// record is archived once.
#[test]
fn an_instance_paused_past_its_lease_notifies_stores_and_archives_everything_once() {
    use crate::alerts::{alert_ids, at, id, once};
    use crate::archive::{accepted, assert_exactly_once};
    use crate::support::mail::{await_mails_within, mails_to, smtp_server};
    use crate::support::service::line;
    use crate::support::sns::{create_topic, published_ids};
    let mut t = Setup::with_shards("kinesis-pause", 2);
    let topic =
        t.rt.block_on(async { create_topic(&aws::sns().await).await });
    let bucket = crate::support::kafka::unique("lake");
    t.rt.block_on(crate::support::s3::create_bucket(&bucket));
    for (k, v) in [
        (
            "STAMPEDE_STORE_SUBSCRIPTION_TABLE",
            crate::support::kafka::unique("stampede-subscriptions"),
        ),
        (
            "STAMPEDE_STORE_NOTIFICATION_TABLE",
            crate::support::kafka::unique("stampede-notifications"),
        ),
        (
            "STAMPEDE_ALERTS_SMTP_SERVER",
            format!("smtp://{}", smtp_server()),
        ),
        ("STAMPEDE_ALERTS_SNS_TOPIC_ARN", topic.clone()),
        // Long: the resolutions below are still waiting for their round when the pause comes.
        ("STAMPEDE_ALERTS_GROUP_INTERVAL_SECS", "20".into()),
        (Aws::Sns.endpoint_var(), Aws::Sns.endpoint()),
        (Aws::S3.endpoint_var(), Aws::S3.endpoint()),
        ("STAMPEDE_ARCHIVE_KIND", "s3".into()),
        ("STAMPEDE_ARCHIVE_BUCKET", bucket.clone()),
        ("STAMPEDE_ARCHIVE_BUFFER_SECS", "2".into()),
    ] {
        t.env.push((k, v));
    }
    let (a, b, ops, names) = t.two_instances_fired("pause");
    let fired: Vec<String> = names.iter().map(|n| id("low-health", n, 1)).collect();
    // Every unicorn recovers; the notifications wait for the next round, 20 s away.
    t.put(
        names
            .iter()
            .map(|n| (n.clone(), line(n, &at(10), 1.0, 106, 150)))
            .collect(),
    );
    wait_until("the first instance's resolutions made", || {
        metric(&a.url, "stampede_alerts_pending") > 0
    });
    a.send("-STOP");
    wait_until_within(
        LONG,
        "the other instance taking the paused one's shard",
        || metric(&b.url, "stampede_source_partitions") == 2,
    );
    a.send("-CONT");
    wait_until_within(LONG, "the woken instance taking a shard back", || {
        metric(&a.url, "stampede_source_partitions") == 1
            && metric(&b.url, "stampede_source_partitions") == 1
    });
    let resolved: Vec<String> = names.iter().map(|n| id("low-health", n, 10)).collect();
    let want = once(&[fired, resolved].concat());
    await_mails_within(LONGEST, &ops, "every change mailed", |m| {
        alert_ids(m).len() == want.len()
    });
    wait_until_within(LONG, "every change published, nothing pending", || {
        published_ids(&topic).len() == want.len()
            && metric(&a.url, "stampede_alerts_pending") == 0
            && metric(&b.url, "stampede_alerts_pending") == 0
    });
    assert_eq!(alert_ids(&mails_to(&ops)), want, "each change mailed once");
    assert_eq!(published_ids(&topic), want, "each change published once");
    let found = metric(&a.url, "stampede_alerts_already_sent_total")
        + metric(&b.url, "stampede_alerts_already_sent_total");
    assert!(found > 0, "the log kept a change from going twice");
    // Windows and the archive.
    t.check(&b.url);
    let records = accepted(read_shards(&t.rt, &t.c, &t.telemetry).into_iter().flatten());
    let total: u32 = records.values().sum();
    let lines = crate::support::s3::lines;
    wait_until_within(LONGEST, "every accepted record in the bucket", || {
        let objects = t.rt.block_on(crate::support::s3::objects(&bucket));
        lines(&objects).values().sum::<u32>() >= total
    });
    assert!(signal(a, "-TERM").success());
    assert!(signal(b, "-TERM").success());
    let objects = t.rt.block_on(crate::support::s3::objects(&bucket));
    assert_exactly_once(&lines(&objects), &records);
    eprintln!("paused past its lease: {} changes notified once each ({found} found sent already); {total} records archived once", want.len());
}

/// Kinesis behind a flaky network (latency, resets, a stall, a refusal, in turn) while a fleet
/// is produced to the stream (directly): readiness names the source while each lasts, reads back
/// off rather than storm, and in the end the store, the summary stream and the dead-letter
/// stream hold what `aggregate` computes over each shard.
#[test]
fn a_flaky_network_to_kinesis_loses_nothing_and_readiness_tells_the_truth() {
    let mut t = Setup::with_shards("kinesis-flaky", 2);
    let proxy =
        crate::support::flaky::Flaky::start(Aws::Kinesis.endpoint().trim_start_matches("http://"));
    t.route_through(&format!("http://{}", proxy.addr), &Aws::DynamoDb.endpoint());
    let serve = t.serve("a");
    wait_until_within(LONG, "both shards read", || {
        metric(&serve.url, "stampede_source_partitions") == 2
    });
    let attempts = crate::faults::tour(&proxy, &serve.url, "source", |phase| {
        produce_with(
            &t.telemetry,
            (40, 2_400),
            &format!("2026-01-01 00:0{phase}:00"),
            90 + phase as u64,
            FAULTS,
            &aws::env(KINESIS),
        );
    });
    assert!(
        attempts <= 40,
        "{attempts} connection attempts in 5 s of resets"
    );
    t.check(&serve.url);
    assert!(signal(serve, "-TERM").success());
}

/// Two instances archive to S3 (moto) in the Hive layout; one is SIGKILLed mid-stream and the
/// other takes its shards over: every accepted record is in the bucket exactly once.
#[test]
fn a_shard_taken_over_after_a_sigkill_archives_every_record_once_on_s3() {
    use crate::archive::{accepted, assert_exactly_once};
    let mut t = Setup::new("kinesis-archive");
    let bucket = crate::support::kafka::unique("lake");
    t.rt.block_on(crate::support::s3::create_bucket(&bucket));
    t.env.push((Aws::S3.endpoint_var(), Aws::S3.endpoint()));
    for (k, v) in [
        ("STAMPEDE_ARCHIVE_KIND", "s3"),
        ("STAMPEDE_ARCHIVE_BUCKET", bucket.as_str()),
        ("STAMPEDE_ARCHIVE_PREFIX", "lake/"),
        ("STAMPEDE_ARCHIVE_LAYOUT", "hive"),
        ("STAMPEDE_ARCHIVE_BUFFER_BYTES", "65536"),
        ("STAMPEDE_ARCHIVE_BUFFER_SECS", "2"),
    ] {
        t.env.push((k, v.to_owned()));
    }
    let produce = |start: &str, seed: u64| {
        produce_with(
            &t.telemetry,
            (40, 10_000),
            start,
            seed,
            "malformed=0.02",
            &aws::env(KINESIS),
        );
    };
    produce("2026-01-01 00:00:00", 71);
    let a = t.serve("a");
    wait_until_within(LONG, "the first instance owning every shard", || {
        metric(&a.url, "stampede_source_partitions") == 4
    });
    let b = t.serve("b");
    wait_until_within(
        LONG,
        "both instances sharing the shards, objects written",
        || {
            metric(&b.url, "stampede_source_partitions") == 2
                && metric(&a.url, "stampede_archive_objects_total") > 0
                && metric(&a.url, "stampede_source_commits_total") > 0
        },
    );
    a.kill();
    produce("2026-01-01 00:04:10", 72);
    wait_until_within(
        LONG,
        "the survivor taking the dead instance's shards",
        || metric(&b.url, "stampede_source_partitions") == 4,
    );
    let want = accepted(read_shards(&t.rt, &t.c, &t.telemetry).into_iter().flatten());
    let total: u32 = want.values().sum();
    assert!(total > 19_000, "{total}");
    let lines = crate::support::s3::lines;
    wait_until_within(LONGEST, "every accepted record in the bucket", || {
        let objects = t.rt.block_on(crate::support::s3::objects(&bucket));
        lines(&objects).values().sum::<u32>() >= total
    });
    let found = metric(&b.url, "stampede_archive_found_total");
    assert!(signal(b, "-TERM").success());
    let objects = t.rt.block_on(crate::support::s3::objects(&bucket));
    for (key, _) in &objects {
        assert!(
            key.starts_with("lake/dt=2026-01-01/hour=00/wildrydes-1-2026-01-01-00-"),
            "{key}"
        );
    }
    assert_exactly_once(&lines(&objects), &want);
    // SQL over the bucket: every record, once.
    let out = stampede_with(
        &[
            "query",
            "--archive",
            &format!("s3://{bucket}/lake/"),
            "--format",
            "csv",
            "SELECT COUNT(*) AS n, COUNT(DISTINCT name) AS unicorns FROM wildrydes",
        ],
        &aws::env(&[Aws::S3]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("n,unicorns\r\n{total},40\r\n")
    );
    eprintln!("archive on S3: {total} records exactly once in {} objects; the survivor found {found} already written", objects.len());
}

/// The example views (renamed per run: their DynamoDB tables outlive the test) kept by two
/// instances sharing a 4-shard stream on the DynamoDB store; one is SIGKILLed and the other
/// takes its shards over from their checkpoints. Each view's rows then equal DuckDB's over the
/// accepted records: exactly once across a shard move, fleet-wide views (merged from every
/// shard by both instances, each write conditional on what it read) included.
#[test]
fn views_survive_a_kinesis_shard_takeover_exactly_once() {
    use crate::views::{
        accepted_records, assert_views_end_as_duckdb, drop_views_in_dynamodb, produce_weakening,
        renamed_examples, EXAMPLES,
    };
    let mut t = Setup::new("kinesis-views");
    let run = crate::support::kafka::unique("k").replace('-', "_");
    let views = t.dir.join("views");
    let named = renamed_examples(&views, &run);
    t.env
        .push(("STAMPEDE_VIEWS_DIR", views.display().to_string()));
    // Alerts (on by default) hold commits until their round: not what this test is about.
    t.env.push(("STAMPEDE_ALERTS_ENABLED", "false".to_owned()));
    let (to, env) = (format!("kinesis://{}", t.telemetry), aws::env(KINESIS));
    let produce = |start: &str, seed: &str| produce_weakening(&to, start, seed, &env);
    produce("2026-01-01 00:00:00", "61");
    let b = t.share_then_kill_the_first();
    produce("2026-01-01 00:04:10", "62");
    wait_until_within(
        LONG,
        "the survivor taking the dead instance's shards",
        || metric(&b.url, "stampede_source_partitions") == 4,
    );
    let (rt, c) = (&t.rt, &t.c);
    close_all_windows(rt, c, &t.telemetry);
    let accepted = accepted_records(&t.dir, &read_shards(rt, c, &t.telemetry));
    assert_views_end_as_duckdb(&b.url, &named, &accepted);
    drop(b);
    // The emulator outlives the test: what this run made goes.
    rt.block_on(drop_views_in_dynamodb(EXAMPLES.map(&named)));
}
