//! `stampede produce --to kafka://HOST:PORT/TOPIC`: the fleet as Kafka messages, one record per
//! message keyed by `Name` (so that a unicorn stays in one partition, in order), batched by
//! librdkafka, idempotent with `acks=all`.
//!
//! Before the first record it asks the cluster for the topic's metadata, so an unreachable broker
//! or a missing topic is a clear error in seconds rather than a stall. librdkafka retries failed
//! sends itself; what still fails after its timeout is counted and fails the run.

use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};

use super::{Generator, ProduceOptions, Progress};
use crate::clients::kafka::{Deliveries, KafkaUrl};
use crate::decode::decode;

/// How long the metadata check and the final flush may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a Kafka run failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaProduceError {
    /// No broker answered.
    #[error("cannot reach the Kafka cluster at {brokers}: {reason} (is the broker running, and is this its advertised address?)")]
    Unreachable {
        /// The bootstrap servers.
        brokers: String,
        /// librdkafka's reason.
        reason: String,
    },
    /// The topic does not exist and was not created.
    #[error("topic {topic:?} does not exist on {brokers}; create it first (it is not created automatically)")]
    NoTopic {
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
    },
    /// The client could not be built.
    #[error("cannot create the Kafka producer: {0}")]
    Client(KafkaError),
    /// Some records were not acknowledged.
    #[error("{failed} of {sent} records were not delivered to {topic}: {first}")]
    Undelivered {
        /// Records that failed.
        failed: u64,
        /// Records sent.
        sent: u64,
        /// The topic.
        topic: String,
        /// The first error.
        first: String,
    },
}

/// Produces the fleet to `url` and returns how many records were sent.
///
/// # Errors
/// The cluster is unreachable, the topic is missing, or records were not acknowledged.
pub fn produce_kafka(opts: ProduceOptions, url: &KafkaUrl) -> Result<u64, KafkaProduceError> {
    let mut config = crate::clients::kafka::client_config(
        &url.brokers,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
            ("batch.num.messages", "10000"),
            ("queue.buffering.max.messages", "500000"),
        ],
        &toml::Table::new(),
    );
    config.set_log_level(RDKafkaLogLevel::Error);
    let producer: BaseProducer<Deliveries> = config
        .create_with_context(Deliveries::default())
        .map_err(KafkaProduceError::Client)?;
    check_topic(&producer, url)?;

    let mut generator = Generator::new(&opts);
    let mut progress = Progress::new(opts.progress);
    let mut buf = String::with_capacity(1 << 16);
    let mut sent = 0u64;
    loop {
        buf.clear();
        if generator.fill(&mut buf, 10_000, 1 << 20) == 0 {
            break;
        }
        for line in buf.lines() {
            let key = decode(line.as_bytes()).ok().map(|t| t.name);
            let mut record = BaseRecord::to(&url.topic).payload(line);
            if let Some(k) = key.as_deref() {
                record = record.key(k);
            }
            let mut pending = record;
            loop {
                match producer.send(pending) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        producer.poll(Duration::from_millis(50));
                        pending = back;
                    }
                    Err((e, _)) => {
                        producer.context().fail(&e);
                        break;
                    }
                }
            }
            sent += 1;
        }
        producer.poll(Duration::ZERO);
        progress.show(sent, generator.started, &format!(" to {}", url.topic));
    }
    let flushed = producer.flush(FLUSH_TIMEOUT);
    progress.finish(sent, generator.started, &format!(" to {}", url.topic));
    let (mut failed, mut first) = producer.context().failures();
    if let Err(e) = flushed {
        failed = failed.max(producer.in_flight_count().max(1) as u64);
        first.get_or_insert_with(|| format!("not acknowledged within {FLUSH_TIMEOUT:?}: {e}"));
    }
    if failed > 0 {
        return Err(KafkaProduceError::Undelivered {
            failed,
            sent,
            topic: url.topic.clone(),
            first: first.unwrap_or_default(),
        });
    }
    Ok(sent)
}

/// Asks for the topic's metadata: a clear error when no broker answers or the topic is missing.
fn check_topic<C: ProducerContext>(
    producer: &BaseProducer<C>,
    url: &KafkaUrl,
) -> Result<(), KafkaProduceError> {
    let metadata = producer
        .client()
        .fetch_metadata(Some(&url.topic), CONNECT_TIMEOUT)
        .map_err(|e| KafkaProduceError::Unreachable {
            brokers: url.brokers.clone(),
            reason: e.to_string(),
        })?;
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == url.topic)
        .is_some_and(|t| t.error().is_none() && !t.partitions().is_empty());
    if found {
        Ok(())
    } else {
        Err(KafkaProduceError::NoTopic {
            topic: url.topic.clone(),
            brokers: url.brokers.clone(),
        })
    }
}
