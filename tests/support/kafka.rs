//! The real Kafka-compatible broker the Kafka tests talk to (started by `scripts/test`, address in
//! `STAMPEDE_TEST_KAFKA`), and what the tests do with it: create topics, read a topic back
//! partition by partition, write to one partition, and compute the expected summaries of what a
//! topic holds with `stampede aggregate`, partition by partition (each partition has its own
//! watermark, as CONTRACT §2 says).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message;
use serde_json::Value;

/// The test broker's address. Fails loudly when there is none: these tests never skip.
pub fn broker() -> String {
    std::env::var("STAMPEDE_TEST_KAFKA").unwrap_or_else(|_| {
        panic!(
            "no Kafka broker for the tests: run ./scripts/test (it installs and starts one), \
             or start one and set STAMPEDE_TEST_KAFKA=HOST:PORT"
        )
    })
}

/// A name no other test (or earlier run against the same broker) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000_000;
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates `topic` with `partitions` partitions.
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .unwrap_or_else(|e| panic!("cannot create topic {topic} on {brokers}: {e}"));
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
    }
}

/// One message as read back.
#[derive(Debug, Clone)]
pub struct Msg {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

/// Every message of `topic`, one list per partition in offset order (up to the high watermark
/// at the time of the call).
pub fn read_topic(brokers: &str, topic: &str) -> Vec<Vec<Msg>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "stampede-tests")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    assert!(!partitions.is_empty(), "topic {topic} has no partitions");
    let mut tpl = TopicPartitionList::new();
    let mut high = Vec::new();
    for &p in &partitions {
        let (_, h) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        high.push(h);
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out: Vec<Vec<Msg>> = vec![Vec::new(); partitions.len()];
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = |out: &Vec<Vec<Msg>>| {
        out.iter()
            .zip(&high)
            .all(|(msgs, &h)| msgs.last().map_or(h == 0, |m| m.offset + 1 >= h))
    };
    while !done(&out) {
        assert!(Instant::now() < deadline, "reading {topic} took over 60 s");
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let index = partitions.iter().position(|&p| p == m.partition()).unwrap();
            let mut headers = BTreeMap::new();
            if let Some(h) = m.headers() {
                for header in h.iter() {
                    headers.insert(
                        header.key.to_owned(),
                        String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
            out[index].push(Msg {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
    }
    out
}

/// Writes `payload` to one partition of `topic`.
pub fn send_to_partition(brokers: &str, topic: &str, partition: i32, payload: &str) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    producer
        .send(
            BaseRecord::<str, str>::to(topic)
                .partition(partition)
                .payload(payload),
        )
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// A record far in the future on every partition of `topic`: it lifts each partition's
/// watermark past every earlier window's allowed lateness, so that all of them are final.
/// Its own window stays open; its unicorn is named `zz-sentinel-*` and left out of comparisons.
pub fn close_all_windows(brokers: &str, topic: &str, partitions: i32, after: &str) {
    for p in 0..partitions {
        let record = format!(
            r#"{{"Name":"zz-sentinel-{p}","StatusTime":"{after}","Latitude":40.7,"Longitude":-73.9,"Distance":1.0,"HealthPoints":100,"MagicPoints":100}}"#
        );
        send_to_partition(brokers, topic, p, &record);
    }
}

/// Summaries by (Name, StatusTime).
pub type Summaries = BTreeMap<(String, String), Value>;

/// What `stampede aggregate` says about a topic read back with [`read_topic`]: the final
/// summaries of every partition (sentinels left out), and every rejected record as
/// (reason, raw bytes), sorted.
pub fn expected(partitions: &[Vec<Msg>], dir: &Path) -> (Summaries, Vec<(String, Vec<u8>)>) {
    let mut summaries = Summaries::new();
    let mut rejected = Vec::new();
    for (i, msgs) in partitions.iter().enumerate() {
        let file = dir.join(format!("partition-{i}.ndjson"));
        let mut f = std::fs::File::create(&file).unwrap();
        for m in msgs {
            assert!(
                !m.payload.contains(&b'\n'),
                "a record with a line break cannot be compared through a file"
            );
            f.write_all(&m.payload).unwrap();
            f.write_all(b"\n").unwrap();
        }
        drop(f);
        let out = crate::support::process::aggregate_file(&file);
        for v in out.summaries {
            if !is_sentinel(&v) {
                summaries.insert(crate::support::process::summary_key(&v), v);
            }
        }
        for (n, reason) in out.rejected {
            rejected.push((reason, msgs[n - 1].payload.clone()));
        }
    }
    rejected.sort();
    (summaries, rejected)
}

/// Keeps `v` in `summaries` when it is its window's highest revision so far; sentinels are left
/// out.
pub fn keep_newest(summaries: &mut Summaries, v: Value) {
    if is_sentinel(&v) {
        return;
    }
    let k = crate::support::process::summary_key(&v);
    if summaries
        .get(&k)
        .is_none_or(|old| old["Revision"].as_u64() <= v["Revision"].as_u64())
    {
        summaries.insert(k, v);
    }
}

fn is_sentinel(v: &Value) -> bool {
    v["Name"]
        .as_str()
        .is_some_and(|n| n.starts_with("zz-sentinel-"))
}

/// Reads the summary topic until the highest revision of every window equals `want` (or
/// [`LONGEST`](crate::support::poll::LONGEST) seconds pass: the topic catches up only after
/// whole data sets, sometimes after a rebalance); returns what it found, sentinels left out, for
/// the caller to compare and say what differs. Read every 500 ms: each read is the whole topic.
pub fn await_summaries(brokers: &str, topic: &str, want: &Summaries) -> Summaries {
    let mut got = Summaries::new();
    crate::support::poll::holds_within(
        Duration::from_secs(crate::support::poll::LONGEST),
        Duration::from_millis(500),
        || {
            got = Summaries::new();
            for msgs in read_topic(brokers, topic) {
                for m in msgs {
                    let v: Value = serde_json::from_slice(&m.payload).unwrap();
                    assert_eq!(m.key.as_deref(), v["Name"].as_str(), "key is the Name");
                    keep_newest(&mut got, v);
                }
            }
            &got == want
        },
    );
    got
}

/// Compares two summary sets and says where they differ.
pub fn assert_same(got: &Summaries, want: &Summaries) {
    let missing: Vec<_> = want
        .keys()
        .filter(|k| !got.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = got
        .keys()
        .filter(|k| !want.contains_key(*k))
        .take(5)
        .collect();
    let wrong: Vec<_> = want
        .iter()
        .filter_map(|(k, v)| got.get(k).filter(|g| *g != v).map(|g| (v, g)))
        .take(3)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && wrong.is_empty(),
        "{} summaries expected, {} found; missing {missing:?}; unexpected {extra:?}; wrong (want, got) {wrong:#?}",
        want.len(),
        got.len()
    );
}

/// Fresh topics of one Kafka-fed test on the shared broker, and the `serve` config that reads
/// them (an hour's idle timeout: only event time closes windows), written in `dir`.
pub struct Fresh {
    pub brokers: String,
    pub topic: String,
    pub summaries: String,
    pub config: PathBuf,
}

impl Fresh {
    /// Topics `NAME-telemetry` (of `partitions`), `NAME-summary` and `NAME-dlq` (one each) and
    /// group `NAME-group`, each made unique.
    pub fn new(dir: &Path, name: &str, partitions: i32) -> Fresh {
        let brokers = broker();
        let topic = unique(&format!("{name}-telemetry"));
        let summaries = unique(&format!("{name}-summary"));
        let dead = unique(&format!("{name}-dlq"));
        create_topic(&brokers, &topic, partitions);
        create_topic(&brokers, &summaries, 1);
        create_topic(&brokers, &dead, 1);
        let config = ServeConfig {
            brokers: &brokers,
            topic: &topic,
            group: &unique(&format!("{name}-group")),
            summaries: &summaries,
            dead_letters: &dead,
            idle_secs: 3_600,
        }
        .write(dir);
        Fresh {
            brokers,
            topic,
            summaries,
            config,
        }
    }
}

/// The config file of a Kafka-fed `stampede serve`.
pub struct ServeConfig<'a> {
    pub brokers: &'a str,
    pub topic: &'a str,
    pub group: &'a str,
    pub summaries: &'a str,
    pub dead_letters: &'a str,
    /// `window.idle_timeout_secs`.
    pub idle_secs: u64,
}

impl ServeConfig<'_> {
    /// Writes the config to `dir/stampede.toml`. With an idle timeout of an hour only event time
    /// closes windows: the results cannot depend on how fast this machine is.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("stampede.toml");
        std::fs::write(
            &path,
            format!(
                r#"[source]
kind = "kafka"
brokers = "{}"
topic = "{}"
group = "{}"
dead_letters = "{}"

[source.kafka_options]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
{}

[window]
idle_timeout_secs = {}

[summary_stream]
kind = "kafka"
topic = "{}"
"#,
                self.brokers,
                self.topic,
                self.group,
                self.dead_letters,
                // STAMPEDE_TEST_KAFKA_DEBUG=cgrp (say) turns on librdkafka's debug logs.
                std::env::var("STAMPEDE_TEST_KAFKA_DEBUG")
                    .map(|d| format!("\"debug\" = \"{d}\""))
                    .unwrap_or_default(),
                self.idle_secs,
                self.summaries
            ),
        )
        .unwrap();
        path
    }
}

/// `stampede produce` of `msgs` records of 40 unicorns starting at `start`, with every kind of
/// fault, into `topic`.
pub fn produce(brokers: &str, topic: &str, msgs: u64, start: &str, seed: u64) {
    crate::support::process::produce_fleet(
        &format!("kafka://{brokers}/{topic}"),
        (40, msgs),
        start,
        seed,
        FAULTS,
        &[],
    );
}

/// Every kind of awkward record: malformed, out-of-order, late and too-late.
pub const FAULTS: &str = "malformed=0.01,out-of-order=0.05,late=0.01,too-late=0.005";

/// A private broker (for the test that stops and restarts one), persisted in `dir`.
pub struct PrivateBroker {
    pub addr: String,
    /// The address it tells clients to use (its own, or a proxy's in front of it).
    advertised: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateBroker {
    /// Starts the broker binary named by `STAMPEDE_TANSU_BIN` on a free port.
    pub fn start(dir: &Path) -> PrivateBroker {
        PrivateBroker::behind(dir, str::to_owned)
    }

    /// As [`PrivateBroker::start`], telling clients to connect to `front(its address)` (a proxy
    /// in front of it) instead of its own address.
    pub fn behind(dir: &Path, front: impl FnOnce(&str) -> String) -> PrivateBroker {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut b = PrivateBroker {
            advertised: front(&addr),
            addr,
            dir: dir.to_owned(),
            child: None,
        };
        b.restart();
        b
    }

    /// Starts it again (same port, same data), waiting until it accepts connections.
    pub fn restart(&mut self) {
        let bin = std::env::var("STAMPEDE_TANSU_BIN").unwrap_or_else(|_| {
            panic!("no broker binary: run ./scripts/test, or set STAMPEDE_TANSU_BIN to tansu")
        });
        let url = format!("tcp://{}", self.addr);
        let advertised = format!("tcp://{}", self.advertised);
        let child = Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            // tansu reads the path of a sqlite:// URL relative to its working directory.
            .args(["--storage-engine", "sqlite://broker.db"])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        crate::support::poll::wait_until(&format!("the broker listening on {}", self.addr), || {
            std::net::TcpStream::connect(&self.addr).is_ok()
        });
    }

    /// Stops it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
    }
}
