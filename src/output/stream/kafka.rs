//! The Kafka outputs: the summary stream (`[summary_stream] kind = "kafka"`) and the dead-letter
//! topic of a Kafka source, each an output of its own: an idempotent producer with `acks=all`,
//! summaries keyed by `Name` so that one unicorn's summaries stay in order in one partition, dead
//! letters with the raw bytes as the value and `reason`, `field` and `origin` headers.
//!
//! Every message is kept until the broker acknowledges it; a failed delivery is sent again
//! (with backoff) rather than dropped, so a barrier is answered only when everything before it
//! is in the topic. A failure that needs someone to act (the topic gone, access denied, a
//! message the broker will never take) marks the output down on `/readyz` with the error, is
//! logged once a minute and counted as permanent; the output keeps retrying, so it recovers by
//! itself once the cause is fixed.

use crate::backoff::Backoff;
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio::sync::mpsc;

use crate::clients::kafka::{client_config, producer_options, Observed, PRODUCER_DEFAULTS};
use crate::metrics::METRICS;
use crate::output::{Barrier, Classify, ErrorKind, Health, Item};

/// Messages awaiting acknowledgement before the oldest is waited for.
const MAX_IN_FLIGHT: usize = 50_000;

/// A message kept until it is acknowledged.
struct Outgoing {
    producer: FutureProducer<Observed>,
    topic: Arc<str>,
    key: Option<String>,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
}

/// Where one kind of message goes: a cluster's producer and a topic.
#[derive(Clone)]
pub struct KafkaTopic {
    producer: FutureProducer<Observed>,
    topic: Arc<str>,
}

impl KafkaTopic {
    /// A producer for `topic` on `brokers` (with the pass-through `options`); `observed`
    /// carries its readiness flag.
    ///
    /// # Errors
    /// librdkafka refused the settings (a pass-through option it does not know, say).
    pub fn new(
        brokers: &str,
        options: &toml::Table,
        topic: &str,
        observed: Observed,
    ) -> Result<KafkaTopic, KafkaError> {
        let producer = client_config(brokers, &PRODUCER_DEFAULTS, &producer_options(options))
            .create_with_context(observed)?;
        Ok(KafkaTopic {
            producer,
            topic: Arc::from(topic),
        })
    }

    /// The same producer (cluster) writing to another topic.
    pub fn with_topic(&self, topic: &str) -> KafkaTopic {
        KafkaTopic {
            producer: self.producer.clone(),
            topic: Arc::from(topic),
        }
    }
}

/// A Kafka output: publishes summaries to one topic, dead letters to another, or both.
pub struct KafkaStream {
    summaries: Option<KafkaTopic>,
    dead_letters: Option<KafkaTopic>,
    in_flight: VecDeque<(Outgoing, DeliveryFuture)>,
    waiting: Vec<Barrier>,
    health: Health,
    /// A delivery has failed since the last success.
    failing: bool,
}

impl KafkaStream {
    /// Publishes summaries to `summaries` and dead letters to `dead_letters` (each optional),
    /// reporting failures to `health`.
    pub fn new(
        summaries: Option<KafkaTopic>,
        dead_letters: Option<KafkaTopic>,
        health: Health,
    ) -> KafkaStream {
        KafkaStream {
            summaries,
            dead_letters,
            in_flight: VecDeque::new(),
            waiting: Vec::new(),
            health,
            failing: false,
        }
    }

    /// Publishes until `rx` closes, then waits for every acknowledgement.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Item>) {
        while let Some(item) = rx.recv().await {
            match item {
                Item::Summaries(summaries, _) => {
                    let Some(topic) = self.summaries.clone() else {
                        continue;
                    };
                    for s in summaries.iter() {
                        let mut payload = String::with_capacity(256);
                        s.write_json(&mut payload);
                        self.send(Outgoing {
                            producer: topic.producer.clone(),
                            topic: Arc::clone(&topic.topic),
                            key: Some(s.name.clone()),
                            payload: payload.into_bytes(),
                            headers: None,
                        })
                        .await;
                    }
                }
                Item::DeadLetters(dead) => {
                    let Some(topic) = self.dead_letters.clone() else {
                        continue;
                    };
                    for d in dead.iter() {
                        let origin = d.origin();
                        let mut headers = OwnedHeaders::new_with_capacity(3)
                            .insert(Header {
                                key: "reason",
                                value: Some(d.reason.as_str()),
                            })
                            .insert(Header {
                                key: "origin",
                                value: Some(origin.as_str()),
                            });
                        if let Some(field) = d.field {
                            headers = headers.insert(Header {
                                key: "field",
                                value: Some(field.as_str()),
                            });
                        }
                        self.send(Outgoing {
                            producer: topic.producer.clone(),
                            topic: Arc::clone(&topic.topic),
                            key: None,
                            payload: d.raw.clone(),
                            headers: Some(headers),
                        })
                        .await;
                    }
                }
                Item::Records(_) | Item::Alerts { .. } | Item::Views { .. } => {}
                Item::Barrier(barrier) => {
                    self.waiting.push(barrier);
                    // Wait only when nothing else is queued: barriers close together share it.
                    if rx.is_empty() {
                        self.settle().await;
                    }
                }
            }
        }
        self.settle().await;
    }

    /// Queues one message, first waiting for the oldest when too many are in flight.
    async fn send(&mut self, out: Outgoing) {
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.settle_oldest().await;
        }
        let delivery = enqueue(&out, &self.health).await;
        self.in_flight.push_back((out, delivery));
    }

    /// Waits for the oldest message's acknowledgement, sending it again until it succeeds.
    async fn settle_oldest(&mut self) {
        let Some((out, mut delivery)) = self.in_flight.pop_front() else {
            return;
        };
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            self.health.busy(true);
            let outcome = delivery.await;
            self.health.busy(false);
            match outcome {
                Ok(Ok(_)) => {
                    METRICS.stream_published.fetch_add(1, Relaxed);
                    if std::mem::take(&mut self.failing) {
                        self.health.set(true);
                    } else {
                        self.health.wrote();
                    }
                    return;
                }
                Ok(Err((e, _))) => self.failed(&out, e.kind(), &e),
                Err(_) => self.failed(
                    &out,
                    ErrorKind::Transient,
                    &"the producer dropped the message",
                ),
            }
            backoff.wait().await;
            delivery = enqueue(&out, &self.health).await;
        }
    }

    /// A delivery failed: counted, reported to `/readyz` when permanent, sent again.
    fn failed(&mut self, out: &Outgoing, kind: ErrorKind, e: &dyn std::fmt::Display) {
        self.failing = true;
        METRICS.stream_errors.fetch_add(1, Relaxed);
        self.health.failed(kind, e);
        if kind == ErrorKind::Transient {
            tracing::warn!(topic = %out.topic, error = %e, "Kafka delivery failed; sending again");
        }
    }

    /// Waits until everything sent is acknowledged, then answers the waiting barriers.
    async fn settle(&mut self) {
        while !self.in_flight.is_empty() {
            self.settle_oldest().await;
        }
        for barrier in self.waiting.drain(..) {
            barrier.done();
        }
    }
}

/// Hands one message to librdkafka, waiting while its queue is full or it refuses.
async fn enqueue(out: &Outgoing, health: &Health) -> DeliveryFuture {
    let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(5));
    loop {
        let mut record = FutureRecord::to(&out.topic).payload(&out.payload);
        if let Some(key) = &out.key {
            record = record.key(key);
        }
        if let Some(h) = &out.headers {
            record = record.headers(h.clone());
        }
        match out.producer.send_result(record) {
            Ok(delivery) => return delivery,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {}
            Err((e, _)) => {
                METRICS.stream_errors.fetch_add(1, Relaxed);
                health.failed(e.kind(), &e);
                if e.kind() == ErrorKind::Transient {
                    tracing::warn!(topic = %out.topic, error = %e, "cannot queue a message for Kafka; retrying");
                }
            }
        }
        backoff.wait().await;
    }
}

impl Classify for KafkaError {
    /// Permanent: the topic is missing, access is denied, or the broker will never take the
    /// message as it is; everything else (timeouts, leader changes, a broker down) passes.
    fn kind(&self) -> ErrorKind {
        use RDKafkaErrorCode as C;
        match self.rdkafka_error_code() {
            Some(
                C::UnknownTopic
                | C::UnknownTopicOrPartition
                | C::UnknownTopicId
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::SaslAuthenticationFailed
                | C::Authentication
                | C::InvalidMessage
                | C::InvalidMessageSize
                | C::MessageSizeTooLarge
                | C::InvalidRecord
                | C::PolicyViolation
                | C::UnsupportedForMessageFormat
                | C::InvalidRequiredAcks
                | C::Fatal,
            ) => ErrorKind::Permanent,
            _ => ErrorKind::Transient,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_topic_or_denied_access_is_permanent_and_a_timeout_is_not() {
        let delivery = |code| KafkaError::MessageProduction(code);
        for code in [
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::MessageSizeTooLarge,
        ] {
            assert_eq!(delivery(code).kind(), ErrorKind::Permanent, "{code:?}");
        }
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::QueueFull,
        ] {
            assert_eq!(delivery(code).kind(), ErrorKind::Transient, "{code:?}");
        }
    }
}
