//! The summary stream and the dead-letter stream: summaries as CONTRACT §2 JSON keyed by `Name`,
//! rejected records with their reason, published to Kafka or Kinesis after the window
//! engine and beside the store.
//!
//! One task per service reads [`StreamItem`]s in order from every partition. A [`Barrier`]
//! is answered only when everything sent before it has been acknowledged by the brokers, which
//! is what lets a durable source commit its position (see `pipeline`). Publishing retries until
//! it succeeds: a summary is never dropped, and while the stream is down the sources stop
//! committing (and, once the bounded queue is full, stop reading).
//!
//! [`Barrier`]: StreamItem::Barrier

use tokio::sync::{mpsc, oneshot};

use crate::record::Summary;
use crate::sink::store::DeadLetter;

/// What a partition sends to the stream task.
#[derive(Debug)]
pub enum StreamItem {
    /// Summaries to publish to the summary stream (if one is configured).
    Summaries(Vec<Summary>),
    /// Rejected records to publish to the dead-letter stream (if one is configured).
    DeadLetters(Vec<DeadLetter>),
    /// Answered once everything sent before it is acknowledged.
    Barrier(oneshot::Sender<()>),
}

/// Where the stream task publishes.
pub enum StreamSink {
    /// A Kafka cluster.
    Kafka(crate::sink::kafka::KafkaSink),
    /// A Kinesis stream.
    Kinesis(crate::sink::kinesis::KinesisSink),
}

impl StreamSink {
    /// Publishes what arrives on `rx` until it closes, then waits for the last acknowledgements.
    pub async fn run(self, rx: mpsc::Receiver<StreamItem>) {
        match self {
            StreamSink::Kafka(sink) => sink.run(rx).await,
            StreamSink::Kinesis(sink) => sink.run(rx).await,
        }
    }
}
