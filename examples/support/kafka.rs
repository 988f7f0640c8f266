//! A plain consumer for the Kafka examples: no group membership, every partition of one topic.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;

/// A consumer of every partition of `topic` from `from`, with `fetch.wait.max.ms` = `wait` and
/// Stampede's `fetch.queue.backoff.ms`.
pub fn assigned(brokers: &str, topic: &str, group: &str, wait: &str, from: Offset) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", wait)
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), from)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    consumer
}
