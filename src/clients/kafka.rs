//! Kafka client plumbing shared by the Kafka source, the Kafka outputs and the `produce` /
//! `consume` commands: `kafka://HOST:PORT/TOPIC` addresses, librdkafka settings with the user's
//! pass-through options (and the producer settings the guarantees rest on), and librdkafka's logs
//! and errors routed into `tracing`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::Statistics;

/// Largest topic name Kafka accepts.
const MAX_TOPIC_LEN: usize = 249;

/// A `kafka://HOST:PORT[,HOST:PORT…]/TOPIC` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaUrl {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    /// The topic.
    pub topic: String,
}

impl KafkaUrl {
    /// Parses `kafka://HOST:PORT/TOPIC`.
    ///
    /// # Errors
    /// What is wrong with it, in words.
    pub fn parse(url: &str) -> Result<KafkaUrl, String> {
        let rest = url
            .strip_prefix("kafka://")
            .ok_or("expected kafka://HOST:PORT/TOPIC")?;
        let (brokers, topic) = rest
            .split_once('/')
            .ok_or("no topic: expected kafka://HOST:PORT/TOPIC")?;
        if brokers.is_empty() || brokers.split(',').any(|b| !b.contains(':')) {
            return Err("expected kafka://HOST:PORT/TOPIC (every broker with its port)".into());
        }
        check_topic(topic)?;
        Ok(KafkaUrl {
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
        })
    }
}

/// Checks a topic name as Kafka does: 1 to 249 of `[a-zA-Z0-9._-]`.
///
/// # Errors
/// Why the name is not a topic name.
pub fn check_topic(topic: &str) -> Result<(), String> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN || !topic.chars().all(legal) {
        return Err(format!(
            "{topic:?} is not a Kafka topic name (1 to {MAX_TOPIC_LEN} of a-z A-Z 0-9 . _ -)"
        ));
    }
    Ok(())
}

/// How long a request to a broker may wait for its answer (`socket.timeout.ms`), unless the
/// options say otherwise.
pub const SOCKET_TIMEOUT_MS: &str = "10000";

/// librdkafka settings: `defaults` first, then the user's pass-through `options` (which win).
pub fn client_config(
    brokers: &str,
    defaults: &[(&str, &str)],
    options: &toml::Table,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config.set_log_level(RDKafkaLogLevel::Warning);
    // A broker that accepts and never answers drops its connection after 10 s rather than
    // librdkafka's 60: the client is down on `/readyz` (with the reason), and reconnects.
    config.set("socket.timeout.ms", SOCKET_TIMEOUT_MS);
    for (key, value) in defaults {
        config.set(*key, *value);
    }
    if options.contains_key("debug") {
        // librdkafka's debug contexts log at debug level.
        config.set_log_level(RDKafkaLogLevel::Debug);
    }
    for (key, value) in options {
        let text = match value {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        config.set(key, text);
    }
    // A fetch waits up to `fetch.wait.max.ms` for its answer by design: the socket timeout
    // stays well above it whatever the options say.
    let wait_ms = |key: &str| {
        config
            .get(key)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let fetch_wait = wait_ms("fetch.wait.max.ms");
    if !options.contains_key("socket.timeout.ms")
        && wait_ms("socket.timeout.ms") < fetch_wait + 5_000
    {
        config.set("socket.timeout.ms", (fetch_wait + 5_000).to_string());
    }
    config
}

/// Checks the pass-through options: values must be strings, numbers or booleans, and the
/// settings Stampede's guarantees rest on cannot be overridden.
///
/// # Errors
/// The first offending key, named as in the config file, and why.
pub fn check_options(options: &toml::Table) -> Result<(), (String, String)> {
    const OURS: [&str; 4] = [
        "enable.auto.commit",
        "enable.auto.offset.store",
        "enable.idempotence",
        "acks",
    ];
    for (key, value) in options {
        let name = format!("source.kafka_options.\"{key}\"");
        if OURS.contains(&key.as_str()) {
            return Err((
                name,
                "is set by Stampede: offsets are committed only after the results are stored, and summaries are published idempotently".into(),
            ));
        }
        if !matches!(
            value,
            toml::Value::String(_) | toml::Value::Integer(_) | toml::Value::Boolean(_)
        ) {
            return Err((name, "must be a string, a number or true/false".into()));
        }
    }
    Ok(())
}

/// A client context that sends librdkafka's logs to `tracing` and keeps a readiness flag: up
/// while some broker of the cluster is connected, down when all are.
#[derive(Clone, Default)]
pub struct Observed {
    /// Whether a broker is reachable (from the statistics every second, and error callbacks).
    pub connected: Arc<AtomicBool>,
    /// The client's last error, in words (why it is down, while it is).
    pub last_error: Arc<Mutex<Option<String>>>,
}

impl ClientContext for Observed {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", fac, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
        }
    }

    /// Up once some connection (bootstrap or learnt) is up; down only while none is and some
    /// is failing or retrying. Brokers not needed yet (`INIT`) or mid-handshake say nothing: a
    /// producer's first statistics often show its only connection up being the bootstrap one,
    /// and those may be read after its first delivery already raised the flag.
    fn stats(&self, statistics: Statistics) {
        let brokers = statistics.brokers.values();
        let mut failing = false;
        for b in brokers {
            match b.state.as_str() {
                "UP" | "UPDATE" => {
                    self.connected.store(true, Ordering::Relaxed);
                    return;
                }
                "DOWN" | "TRY_CONNECT" | "CONNECT" => failing = true,
                _ => {}
            }
        }
        if failing {
            self.connected.store(false, Ordering::Relaxed);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.connected.store(false, Ordering::Relaxed);
        }
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(format!("{error}: {reason}"));
        tracing::warn!(target: "librdkafka", %error, reason, "kafka client error");
    }
}

impl rdkafka::consumer::ConsumerContext for Observed {}

/// A producer context that counts failed deliveries and keeps the first reason.
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Deliveries {
    /// Counts one failure.
    pub fn fail(&self, error: &KafkaError) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| error.to_string());
    }

    /// Failures so far, and the first reason.
    pub fn failures(&self) -> (u64, Option<String>) {
        let first = self
            .first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        (self.failed.load(Ordering::Relaxed), first)
    }
}

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            tracing::warn!(target: "librdkafka", fac, "{message}");
        }
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.fail(e);
        }
    }
}

/// Producer settings Stampede's guarantees rest on (the user's options cannot change them).
pub const PRODUCER_DEFAULTS: [(&str, &str); 5] = [
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("linger.ms", "5"),
    ("statistics.interval.ms", "1000"),
    // Deliveries are retried by us after this, so a long outage loses nothing.
    ("message.timeout.ms", "30000"),
];

/// The pass-through options minus the consumer-only ones, which a producer would warn about.
pub fn producer_options(options: &toml::Table) -> toml::Table {
    const CONSUMER_ONLY: [&str; 6] = [
        "group.id",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "max.poll.interval.ms",
        "auto.offset.reset",
        "partition.assignment.strategy",
    ];
    options
        .iter()
        .filter(|(k, _)| !CONSUMER_ONLY.contains(&k.as_str()) && !k.starts_with("fetch."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Why a Kafka client could not be built, as an error for the user: a setting librdkafka refuses
/// is bad config naming its `[source.kafka_options]` key (exit 2); anything else says `what`.
pub fn start_error(e: KafkaError, what: &str) -> anyhow::Error {
    match e {
        KafkaError::ClientConfig(_, description, key, _) => {
            crate::setting::BadSetting::key(&format!("source.kafka_options.\"{key}\""), description)
                .into()
        }
        other => anyhow::Error::new(other).context(what.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kafka_urls() {
        assert_eq!(
            KafkaUrl::parse("kafka://127.0.0.1:9092/wildrydes"),
            Ok(KafkaUrl {
                brokers: "127.0.0.1:9092".into(),
                topic: "wildrydes".into()
            })
        );
        assert_eq!(
            KafkaUrl::parse("kafka://a:1,b:2/t.x-y_z").map(|u| u.brokers),
            Ok("a:1,b:2".into())
        );
        for bad in [
            "kafka://127.0.0.1:9092",
            "kafka://127.0.0.1:9092/",
            "kafka:///t",
            "kafka://host/t",
            "kafka://h:1/bad topic",
            "http://h:1/t",
        ] {
            assert!(KafkaUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_that_would_break_the_guarantees_are_refused_by_name() {
        let mut t = toml::Table::new();
        t.insert("session.timeout.ms".into(), toml::Value::Integer(6000));
        assert!(check_options(&t).is_ok());
        t.insert("enable.auto.commit".into(), toml::Value::Boolean(true));
        let (key, _) = check_options(&t).unwrap_err();
        assert_eq!(key, "source.kafka_options.\"enable.auto.commit\"");
    }
}
