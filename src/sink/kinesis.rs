//! The Kinesis summary stream (`[summary_stream] kind = "kinesis"`): summaries as CONTRACT §2
//! JSON, partition key `Name` (one unicorn's summaries stay in one shard, in order), up to 500 per
//! `PutRecords` call. A barrier is answered once every record sent before it is in the stream:
//! the calls are awaited in order, and refused entries are sent again until they are accepted
//! (see [`crate::produce::put_all`]); nothing is dropped.

use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;
use tokio::sync::mpsc;

use crate::kinesis::PUT_RECORDS_MAX;
use crate::metrics::METRICS;
use crate::record::Summary;
use crate::sink::stream::StreamItem;

/// The summary stream's producer.
pub struct KinesisSink {
    client: Client,
    stream: String,
}

impl KinesisSink {
    /// Publishes summaries to `stream` with `client`.
    pub fn new(client: Client, stream: &str) -> KinesisSink {
        KinesisSink {
            client,
            stream: stream.to_owned(),
        }
    }

    /// Publishes until `rx` closes.
    pub async fn run(self, mut rx: mpsc::Receiver<StreamItem>) {
        while let Some(item) = rx.recv().await {
            match item {
                StreamItem::Summaries(summaries) => {
                    for chunk in summaries.chunks(PUT_RECORDS_MAX) {
                        self.publish(chunk).await;
                    }
                }
                // Only a Kinesis source dead-letters to Kinesis; none is configured here.
                StreamItem::DeadLetters(_) => {}
                // Everything before it has been awaited.
                StreamItem::Barrier(ack) => {
                    let _ = ack.send(());
                }
            }
        }
    }

    async fn publish(&self, summaries: &[Summary]) {
        let mut entries = Vec::with_capacity(summaries.len());
        for s in summaries {
            let mut json = String::with_capacity(256);
            s.write_json(&mut json);
            let entry = PutRecordsRequestEntry::builder()
                .data(Blob::new(json.into_bytes()))
                .partition_key(s.name.clone())
                .build();
            match entry {
                Ok(e) => entries.push(e),
                Err(e) => tracing::error!(error = %e, "cannot build a Kinesis record"),
            }
        }
        let count = entries.len() as u64;
        loop {
            match crate::produce::put_all(&self.client, &self.stream, entries.clone()).await {
                Ok(_) => {
                    METRICS
                        .stream_published
                        .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    METRICS
                        .stream_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::error!(stream = %self.stream, error = %e, "summary stream: still retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}
