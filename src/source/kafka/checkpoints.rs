//! Where the Kafka source keeps its engines' checkpoints: a topic (`source.checkpoint_topic`,
//! default `stampede-checkpoints`, compacted, created when missing) with one record per commit,
//! keyed `GROUP/TOPIC/PARTITION`, valued `OFFSET CHECKPOINT`.
//!
//! Kafka's own offset commits carry a metadata string meant for this, but not every broker
//! returns it (the tansu broker stores it and answers an empty string), and a new owner that
//! resumes without the watermark and last position of its predecessor could emit a partial
//! window. A record in a topic works on every broker. The record is written and acknowledged
//! before the offset is committed, so it is never older than the commit; the offset is still
//! committed (with the checkpoint as metadata) for the tools that watch consumer lag.
//!
//! Reading scans the topic backwards from its end in growing steps until every wanted key is
//! found: the newest record of a partition is near the end as long as it is being committed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message;

use crate::clients::kafka::{client_config, Deliveries, Observed};
use crate::window::Checkpoint;

/// How long a write or a read of checkpoints may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// How long a checkpoint save waits for the broker's acknowledgement on the poll thread.
const SAVE_WAIT: Duration = Duration::from_secs(2);
/// Records read from the end in the first step of a scan (then four times more each step).
const FIRST_STEP: i64 = 4_096;

/// The checkpoint store of one consumer group on one topic.
pub struct Checkpoints {
    producer: BaseProducer<Deliveries>,
    brokers: String,
    options: toml::Table,
    topic: String,
    /// `GROUP/TOPIC/`: the key of partition P is this followed by P.
    prefix: String,
}

/// A partition's newest checkpoint, with the offset to resume from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The position to re-read from.
    pub offset: u64,
    /// The engine state at that position.
    pub checkpoint: Checkpoint,
}

impl Checkpoints {
    /// Opens the store, creating its topic (one partition, compacted) when it is missing.
    ///
    /// # Errors
    /// The producer cannot be built or the topic can neither be found nor created.
    pub fn open(
        brokers: &str,
        options: &toml::Table,
        topic: &str,
        group: &str,
        source_topic: &str,
    ) -> KafkaResult<Checkpoints> {
        let producer: BaseProducer<Deliveries> = client_config(
            brokers,
            &[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("linger.ms", "0"),
                // A checkpoint the broker has not taken in 30 s fails (librdkafka's default is
                // 5 minutes, during which no commit could be made).
                ("message.timeout.ms", "30000"),
            ],
            &crate::clients::kafka::producer_options(options),
        )
        .create_with_context(Deliveries::default())?;
        let store = Checkpoints {
            producer,
            brokers: brokers.to_owned(),
            options: options.clone(),
            topic: topic.to_owned(),
            prefix: format!("{group}/{source_topic}/"),
        };
        store.ensure_topic()?;
        Ok(store)
    }

    fn ensure_topic(&self) -> KafkaResult<()> {
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(&self.topic), TIMEOUT)?;
        let exists = metadata
            .topics()
            .iter()
            .any(|t| t.name() == self.topic && t.error().is_none() && !t.partitions().is_empty());
        if exists {
            return Ok(());
        }
        let admin: AdminClient<Observed> = client_config(&self.brokers, &[], &self.options)
            .create_with_context(Observed::default())?;
        // Replication -1: the broker's default.replication.factor (KIP-464), so that the
        // checkpoints are as durable as the cluster's own topics, not one copy.
        let topic = NewTopic::new(&self.topic, 1, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| KafkaError::AdminOpCreation(e.to_string()))?;
        let results = runtime.block_on(admin.create_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        ))?;
        for result in results {
            match result {
                Ok(_) => tracing::info!(topic = %self.topic, "created the checkpoint topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => {
                    tracing::error!(topic = %t, error = %code, "cannot create the checkpoint topic");
                    return Err(KafkaError::AdminOp(code));
                }
            }
        }
        Ok(())
    }

    /// Writes one checkpoint per `(partition, offset, checkpoint)` and waits until all are
    /// acknowledged. `false`: nothing was written, because an earlier save is still not
    /// acknowledged (a stalled broker); the caller tries again later.
    ///
    /// # Errors
    /// A record could not be written; nothing may then be committed.
    pub fn save(&self, entries: &[(i32, u64, Checkpoint)], last: bool) -> KafkaResult<bool> {
        // This runs on the poll thread, which also serves the consumer's callbacks (`/readyz`
        // reads them): an earlier save still unacknowledged is not waited for again, except
        // by a partition's last save before it is handed off (`last`), which waits SAVE_WAIT.
        let deadline = Instant::now() + if last { SAVE_WAIT } else { Duration::ZERO };
        loop {
            self.producer.poll(Duration::ZERO);
            if self.producer.in_flight_count() == 0 {
                break;
            }
            if Instant::now() >= deadline {
                if last {
                    tracing::warn!("kafka: an earlier checkpoint is still not acknowledged; the partition is handed off without its last one (its next owner re-reads more)");
                }
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let (failed_before, _) = self.producer.context().failures();
        for (partition, offset, checkpoint) in entries {
            let key = format!("{}{partition}", self.prefix);
            let value = format!("{offset} {}", checkpoint.encode());
            self.producer
                .send(BaseRecord::to(&self.topic).key(&key).payload(&value))
                .map_err(|(e, _)| e)?;
        }
        // Not `flush`: rust-rdkafka's waits for delivery reports in steps of 100 ms, so every
        // save held the live path up for 100 ms (twice a second at four partitions: a tenth of
        // the dashboard's frames were 100 ms stale). The broker acknowledges within a few
        // milliseconds; past SAVE_WAIT the round is given up.
        let deadline = Instant::now() + SAVE_WAIT;
        while self.producer.in_flight_count() > 0 {
            if Instant::now() >= deadline {
                return Err(KafkaError::Flush(RDKafkaErrorCode::MessageTimedOut));
            }
            self.producer.poll(Duration::from_millis(1));
        }
        let (failed, first) = self.producer.context().failures();
        if failed > failed_before {
            tracing::warn!(error = ?first, "checkpoint not acknowledged");
            return Err(KafkaError::MessageProduction(RDKafkaErrorCode::Fail));
        }
        Ok(true)
    }

    /// The newest checkpoint of each of `partitions` that has one.
    ///
    /// # Errors
    /// The topic could not be read.
    pub fn load(&self, partitions: &[i32]) -> KafkaResult<HashMap<i32, Saved>> {
        let consumer: BaseConsumer<Observed> = client_config(
            &self.brokers,
            &[
                ("group.id", "stampede-checkpoint-reader"),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
            ],
            &self.options,
        )
        .create_with_context(Observed::default())?;
        let mut found = HashMap::new();
        let metadata = consumer.fetch_metadata(Some(&self.topic), TIMEOUT)?;
        let topic_partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        for p in topic_partitions {
            let (low, high) = consumer.fetch_watermarks(&self.topic, p, TIMEOUT)?;
            let mut end = high;
            let mut step = FIRST_STEP;
            while end > low && found.len() < partitions.len() {
                let start = (end - step).max(low);
                let mut newest = HashMap::new();
                self.read(&consumer, p, start, end, &mut newest)?;
                for (partition, saved) in newest {
                    if partitions.contains(&partition) {
                        found.entry(partition).or_insert(saved);
                    }
                }
                end = start;
                step = step.saturating_mul(4);
            }
        }
        Ok(found)
    }

    /// Reads `[start, end)` of checkpoint partition `p`, keeping the newest record per key.
    fn read(
        &self,
        consumer: &BaseConsumer<Observed>,
        p: i32,
        start: i64,
        end: i64,
        newest: &mut HashMap<i32, Saved>,
    ) -> KafkaResult<()> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, p, Offset::Offset(start))?;
        consumer.assign(&tpl)?;
        let deadline = Instant::now() + TIMEOUT * 3;
        let mut next = start;
        while next < end {
            if Instant::now() > deadline {
                return Err(KafkaError::Global(RDKafkaErrorCode::OperationTimedOut));
            }
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message?;
            next = message.offset() + 1;
            let key = message.key().and_then(|k| std::str::from_utf8(k).ok());
            let Some(partition) = key
                .and_then(|k| k.strip_prefix(&self.prefix))
                .and_then(|rest| rest.parse::<i32>().ok())
            else {
                continue;
            };
            let value = message
                .payload()
                .and_then(|v| std::str::from_utf8(v).ok())
                .unwrap_or_default();
            if let Some(saved) = parse(value) {
                newest.insert(partition, saved);
            }
        }
        Ok(())
    }
}

/// Reads `OFFSET CHECKPOINT`.
fn parse(value: &str) -> Option<Saved> {
    let (offset, checkpoint) = value.split_once(' ')?;
    let offset: u64 = offset.parse().ok()?;
    Some(Saved {
        offset,
        checkpoint: Checkpoint::decode(checkpoint, offset)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_back() {
        let c = Checkpoint {
            watermark: 42,
            low_water: Some(7),
            last_position: Some(9),
            closings: vec![(60_000, Some(3)), (120_000, None)],
            alerts: Some("Bucephalus@120000:low-magic=61000/-/p".into()),
            finals: vec![(0, None), (60_000, Some(8))],
        };
        assert_eq!(
            parse(&format!("7 {}", c.encode())),
            Some(Saved {
                offset: 7,
                checkpoint: c
            })
        );
        assert_eq!(parse("x stampede/1 watermark=1"), None);
        assert_eq!(parse("7"), None);
    }
}
