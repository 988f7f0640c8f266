//! Kinesis against kinesalite (an emulator that validates like AWS), started by
//! `scripts/components/aws`; its address is in `STAMPEDE_TEST_KINESIS`: `produce --to kinesis://`
//! and `consume --from kinesis://`, and the Kinesis summary stream of `serve`.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use crate::support::process::{signal, start_service_with};

fn endpoint() -> String {
    std::env::var("STAMPEDE_TEST_KINESIS").unwrap_or_else(|_| {
        panic!("no Kinesis emulator for the tests: run ./scripts/test, or set STAMPEDE_TEST_KINESIS=http://HOST:PORT")
    })
}

fn aws_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
    ]
}

fn stampede(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stampede"))
        .args(args)
        .envs(aws_env())
        .output()
        .unwrap()
}

fn client(rt: &tokio::runtime::Runtime) -> aws_sdk_kinesis::Client {
    let config = rt.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .load(),
    );
    aws_sdk_kinesis::Client::new(&config)
}

/// Creates `stream` with `shards` shards and waits until it is active.
fn create_stream(
    rt: &tokio::runtime::Runtime,
    c: &aws_sdk_kinesis::Client,
    stream: &str,
    shards: i32,
) {
    rt.block_on(
        c.create_stream()
            .stream_name(stream)
            .shard_count(shards)
            .send(),
    )
    .unwrap();
    for _ in 0..100 {
        let d = rt
            .block_on(c.describe_stream_summary().stream_name(stream).send())
            .unwrap();
        let status = d.stream_description_summary.map(|s| s.stream_status);
        if status == Some(aws_sdk_kinesis::types::StreamStatus::Active) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("stream {stream} did not become active");
}

/// Every record of every shard of `stream`, from the beginning.
fn read_all(
    rt: &tokio::runtime::Runtime,
    c: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Vec<Vec<u8>> {
    let shards = rt
        .block_on(stampede::kinesis::list_shards(c, stream))
        .unwrap();
    let mut out = Vec::new();
    for shard in shards {
        let mut it = rt
            .block_on(
                c.get_shard_iterator()
                    .stream_name(stream)
                    .shard_id(shard.shard_id())
                    .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
                    .send(),
            )
            .unwrap()
            .shard_iterator;
        while let Some(i) = it {
            let page = rt
                .block_on(c.get_records().shard_iterator(i).send())
                .unwrap();
            let empty = page.records.is_empty();
            out.extend(page.records.into_iter().map(|r| r.data.into_inner()));
            it = if empty {
                None
            } else {
                page.next_shard_iterator
            };
        }
    }
    out
}

#[test]
fn produce_and_consume_through_kinesis() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = client(&rt);
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
    let c = client(&rt);
    let stream = crate::support::kafka::unique("wildrydes-summary");
    create_stream(&rt, &c, &stream, 2);
    let dir = crate::support::service::temp_dir("kinesis-summary");
    let produce = |to: &str| {
        Command::new(env!("CARGO_BIN_EXE_stampede"))
            .args([
                "produce",
                "--unicorns",
                "20",
                "--msgs",
                "4000",
                "--rate",
                "max",
            ])
            .args([
                "--seed",
                "13",
                "--start-time",
                "2018-03-18 03:20:00",
                "--quiet",
            ])
            .args(["--faults", "out-of-order=0.05,late=0.01"])
            .args(["--to", to])
            .output()
            .unwrap()
    };
    let file = dir.join("fleet.ndjson");
    std::fs::write(&file, produce("-").stdout).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stampede"))
        .arg("aggregate")
        .arg(&file)
        .output()
        .unwrap();
    let want: BTreeMap<(String, String), Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            ((v["Name"].to_string(), v["StatusTime"].to_string()), v)
        })
        .collect();

    let mut env = aws_env();
    env.push(("STAMPEDE_SUMMARY_STREAM_KIND", "kinesis".into()));
    env.push(("STAMPEDE_SUMMARY_STREAM_STREAM", stream.clone()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let serve = start_service_with(&["serve"], &dir.join("store"), &env);
    let sent = produce(&format!("{}/ingest", serve.url));
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    // Stopping flushes every window, and the stream task publishes them before exiting.
    assert!(signal(serve, "-TERM").success());

    let mut got: BTreeMap<(String, String), Value> = BTreeMap::new();
    for data in read_all(&rt, &c, &stream) {
        let v: Value = serde_json::from_slice(&data).unwrap();
        let k = (v["Name"].to_string(), v["StatusTime"].to_string());
        if got
            .get(&k)
            .is_none_or(|old| old["Revision"].as_u64() <= v["Revision"].as_u64())
        {
            got.insert(k, v);
        }
    }
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    std::fs::remove_dir_all(&dir).ok();
}
